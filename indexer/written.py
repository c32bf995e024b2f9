"""What this container last wrote, per physical index and document: the guard's read, kept.

One shard is processed by one invocation at a time, so a warm container sees the same hot items
batch after batch. After each write it keeps what the bulk response said the document now is
(our sequence, its ``_seq_no`` and ``_primary_term``); the next change to that document can then
be written with ``if_seq_no``/``if_primary_term`` without reading it first. An entry is only
ever used to *write*, never to call a record stale: if anyone wrote the document since, the
cluster refuses the write (409) and the guard reads again and decides again, as it does for any
conflict. A stale entry therefore costs one re-read, never a wrong document.

Keyed by physical index name, so a rebuild's swap to a new index starts empty; bounded (least
recently used entries go first) so a container's memory stays flat whatever the key space.
"""

from __future__ import annotations

from collections import OrderedDict

from .actions import Current

#: Entries kept per container: about 300 bytes each, so a few MB at most.
DEFAULT_CAPACITY = 10_000


class WrittenCache:
    """(index, doc id) → the revision this container wrote last, least recently used first out."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], Current] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def usable(self, index: str, doc_id: str, sequence: int) -> Current | None:
        """The revision to write ``sequence`` over without reading, or None to read first.

        Only an entry older than ``sequence`` is usable: one as new or newer would make the
        record stale, and only a read may decide that (the entry could predate a recreation
        of the index, or a rewrite by another container)."""
        entry = self._entries.get((index, doc_id))
        if entry is None or entry.sequence >= sequence:
            return None
        self._entries.move_to_end((index, doc_id))
        return entry

    def wrote(self, index: str, doc_id: str, current: Current) -> None:
        """Remember that ``index`` holds ``current`` for ``doc_id`` after our write; not a table
        state (``current.read``): the snapshot rule may call a record stale against it, which
        only a read may decide."""
        key = (index, doc_id)
        if current.read is not None:
            self._entries.pop(key, None)
            return
        self._entries[key] = current
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, index: str, doc_id: str) -> None:
        """Drop an entry that may no longer hold (a conflict, an uncertain outcome)."""
        self._entries.pop((index, doc_id), None)

    def forget_index(self, index: str | None = None) -> None:
        """Drop every entry of ``index`` (all of them when None): it was deleted or swapped."""
        if index is None:
            self._entries.clear()
            return
        for key in [key for key in self._entries if key[0] == index]:
            del self._entries[key]
