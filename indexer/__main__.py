"""``python -m indexer sync``: local sync; see ``indexer.localsync.cli``."""

from indexer.localsync.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
