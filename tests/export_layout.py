"""moto's table export, completed to the layout AWS documents (a test fixture, not the product).

moto's ``export_table_to_point_in_time`` writes one ``data/<uuid>.gz`` and no manifests, and its
``DescribeExport`` has no ``ExportManifest``. AWS writes (developer guide, "DynamoDB table export
output format")::

    <prefix>/AWSDynamoDB/<export id>/manifest-summary.json
    <prefix>/AWSDynamoDB/<export id>/manifest-files.json   one line per data file:
        {"itemCount": n, "md5Checksum": "<base64 md5>", "etag": "...", "dataFileS3Key": "..."}
    <prefix>/AWSDynamoDB/<export id>/data/<random>.json.gz  lines of {"Item": {...}}

:func:`patch` replaces moto's writer with one that writes exactly that (several data files, so a
rebuild gets several units) and adds ``ExportManifest`` and ``ExportTime`` to the description.
The product is tested against this layout only. Run as a script, it is a moto server with the
patch applied (for tests that run the CLI as a process).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

#: Items per data file: small, so a test table of a few hundred items spans several files.
ITEMS_PER_FILE = 50


def layout(items: list[str], export_arn: str, table_arn: str, bucket: str, prefix: str,
           fmt: str = "DYNAMODB_JSON") -> dict[str, bytes]:
    """S3 key → body of a complete export of ``items`` (DynamoDB JSON lines, ``{"Item": ...}``)."""
    export_id = export_arn.rsplit("/", 1)[-1]
    base = f"{prefix.strip('/') + '/' if prefix.strip('/') else ''}AWSDynamoDB/{export_id}"
    objects: dict[str, bytes] = {}
    entries = []
    for number, start in enumerate(range(0, max(len(items), 1), ITEMS_PER_FILE)):
        chunk = items[start:start + ITEMS_PER_FILE]
        body = gzip.compress("".join(line + "\n" for line in chunk).encode("utf-8"))
        key = "/".join((base, "data", f"{number:04d}{export_id[:8]}.json.gz"))  # an S3 key
        objects[key] = body
        entries.append({"itemCount": len(chunk), "md5Checksum": base64.b64encode(hashlib.md5(body).digest()).decode(),
                        "etag": hashlib.md5(body).hexdigest(), "dataFileS3Key": key})
    files_key = f"{base}/manifest-files.json"
    objects[files_key] = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
    now = datetime.now(timezone.utc).isoformat()
    objects[f"{base}/manifest-summary.json"] = json.dumps({
        "version": "2020-06-30", "exportArn": export_arn, "startTime": now, "endTime": now, "tableArn": table_arn,
        "tableId": "00000000-0000-0000-0000-000000000000", "exportTime": now, "s3Bucket": bucket,
        "s3Prefix": prefix or None, "s3SseAlgorithm": "AES256", "s3SseKmsKeyId": None,
        "manifestFilesS3Key": files_key, "billedSizeBytes": sum(len(v) for v in objects.values()),
        "itemCount": len(items), "outputFormat": fmt, "exportType": "FULL_EXPORT",
    }).encode()
    return objects


def patch(setter: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make moto's TableExport write AWS's layout and describe it as AWS does (``setter``:
    pytest's ``monkeypatch.setattr`` to undo it after a test)."""
    from moto.dynamodb.models.table_export import TableExport
    from moto.dynamodb.models.utilities import dynamo_json_dump

    def backup(self: Any, s3_backend: Any) -> None:
        self.export_time = time.time()
        lines = [dynamo_json_dump(item.to_json(root_attr_name="Item")) for item in self.table.all_items()]
        self.item_count = len(lines)
        objects = layout(lines, self.arn, self.table.table_arn, self.s3_bucket, self.s3_prefix or "")
        for key, body in objects.items():
            s3_backend.put_object(bucket_name=self.s3_bucket, key_name=key, value=body)
            self.processed_bytes += len(body)
        self.manifest = next(key for key in objects if key.endswith("manifest-summary.json"))
        self.status = "COMPLETED"

    original = TableExport.response

    def response(self: Any) -> dict[str, Any]:
        described = original(self)
        if getattr(self, "manifest", None):
            described["ExportManifest"] = self.manifest
            described["ExportTime"] = self.export_time
        return described

    setter(TableExport, "_backup_to_s3_file", backup)
    setter(TableExport, "response", response)


if __name__ == "__main__":
    patch()
    from moto.server import main

    main(sys.argv[1:])
