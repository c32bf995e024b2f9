"""The sample application deployed beside the indexer: S3 notifications recorded in the table."""
