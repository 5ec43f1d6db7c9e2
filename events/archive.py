"""The log's archive: its old part, moved from Redis to immutable Parquet segments.

Layout under the archive root (a directory or any pyarrow/fsspec URL, see
:mod:`events.files`)::

    _manifest.json                        the commit: every segment, per partition, in order
    p<P>/seg-<first>-<last>.parquet       entries <first>..<last> of partition P

A segment holds each entry as Redis stored it: its id and its fields, byte for byte (the
audit hashes the stored bytes, so nothing may be re-encoded). The manifest lists, per
segment, its first and last entry id, its row count and the SHA-256 of the file, which a
reader checks before it uses one.

Redis records in ``{prefix}:archive:{pN}`` the last entry id of partition N that has left
it; the archive sets it in the script that trims (``workers.archive``), after the segment
is committed. A reader (:meth:`events.store.EventStore.read_raw`) reads that marker and the
stream in one transaction, so it always knows which part of the log to take from here.
This module only reads; writing is ``workers.archive``.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from events.errors import ArchiveError
from events.files import FileRoot
from events.positions import parse_stream_id

MANIFEST = "_manifest.json"
FORMAT = 1

Row = tuple[str, dict[bytes, bytes]]
"""One log entry as Redis returns it: its id and its fields."""

SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("entry_id", pa.string(), nullable=False),
        pa.field("fields", pa.map_(pa.binary(), pa.binary()), nullable=False),
    ]
)


def segment_table(rows: list[Row]) -> pa.Table:
    return pa.table(
        {
            "entry_id": [entry_id for entry_id, _ in rows],
            "fields": [list(fields.items()) for _, fields in rows],
        },
        schema=SEGMENT_SCHEMA,
    )


def table_rows(table: pa.Table) -> list[Row]:
    ids = table.column("entry_id").to_pylist()
    fields = table.column("fields").to_pylist()
    return [(entry_id, dict(pairs)) for entry_id, pairs in zip(ids, fields, strict=True)]


def empty_manifest() -> dict[str, Any]:
    return {"format": FORMAT, "source": {}, "partitions": {}}


def read_manifest(root: FileRoot) -> dict[str, Any]:
    manifest: dict[str, Any] | None = root.read_json(MANIFEST)
    if manifest is None:
        return empty_manifest()
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"{root.url}: archive manifest format {manifest.get('format')!r}")
    return manifest


def read_segment(root: FileRoot, segment: dict[str, Any]) -> list[Row]:
    """A segment's entries, after checking the file is the one the manifest lists."""
    data = root.read_bytes(segment["path"])
    if sha256(data).hexdigest() != segment["sha256"] or len(data) != segment["bytes"]:
        raise ArchiveError(f"{root.url}/{segment['path']}: checksum differs from the manifest")
    rows = table_rows(pq.read_table(pa.BufferReader(data)))
    if len(rows) != segment["rows"] or (rows[0][0], rows[-1][0]) != (
        segment["first"],
        segment["last"],
    ):
        raise ArchiveError(f"{root.url}/{segment['path']}: entries differ from the manifest")
    return rows


@dataclass(slots=True)
class _Loaded:
    path: str
    ids: list[tuple[int, int]]
    rows: list[Row]


class Archive:
    """The read side of an archive: entries of a partition in a range, in log order.

    Keeps the last segment read per partition, since readers go through a partition in
    batches much smaller than a segment.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = FileRoot(url)
        self.manifest = read_manifest(self.root)
        self._loaded: dict[int, _Loaded] = {}

    def reload(self) -> None:
        self.manifest = read_manifest(self.root)

    def partition(self, p: int) -> dict[str, Any]:
        part: dict[str, Any] = self.manifest["partitions"].get(str(p)) or {}
        return part

    def last(self, p: int) -> str | None:
        """The last entry id of partition ``p`` held here (``None``: none)."""
        segments = self.partition(p).get("segments") or []
        return segments[-1]["last"] if segments else None

    def rows(self, p: int) -> int:
        return sum(s["rows"] for s in self.partition(p).get("segments") or [])

    def read(self, p: int, after: str, count: int, through: str | None = None) -> list[Row]:
        """Up to ``count`` entries of partition ``p`` in ``(after, through]``."""
        low = parse_stream_id(after)
        high = parse_stream_id(through) if through is not None else None
        out: list[Row] = []
        for segment in self.partition(p).get("segments") or []:
            if parse_stream_id(segment["last"]) <= low:
                continue
            if high is not None and parse_stream_id(segment["first"]) > high:
                break
            loaded = self._segment(p, segment)
            for i in range(bisect_right(loaded.ids, low), len(loaded.rows)):
                if high is not None and loaded.ids[i] > high:
                    return out
                out.append(loaded.rows[i])
                if len(out) == count:
                    return out
        return out

    def _segment(self, p: int, segment: dict[str, Any]) -> _Loaded:
        loaded = self._loaded.get(p)
        if loaded is None or loaded.path != segment["path"]:
            rows = read_segment(self.root, segment)
            loaded = _Loaded(segment["path"], [parse_stream_id(r[0]) for r in rows], rows)
            self._loaded[p] = loaded
        return loaded
