"""A directory on a pyarrow filesystem (local, ``s3://``, or any fsspec URL) with atomic writes.

Shared by the lake (:mod:`workers.export`) and the log's archive (:mod:`events.archive`):
every file is written under a temporary name, checksummed as it landed, then moved to its
name, so a reader never sees a partial file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_encoder = msgspec.json.Encoder()


def filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's own filesystems (``file``, ``s3`` with the usual AWS settings, ``gs``,
    ``hdfs``), else fsspec's, when fsspec and the scheme's package are installed."""
    try:
        return pafs.FileSystem.from_uri(url)
    except pa.ArrowInvalid:
        try:
            import fsspec.core
        except ImportError:
            raise ValueError(
                f"{url}: pyarrow does not know this scheme, fsspec is absent"
            ) from None
        fs, root = fsspec.core.url_to_fs(url)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), root


def absolute_url(url: str) -> str:
    """``url`` as every process reads it alike: a local path made absolute, a URL as is."""
    return url if "://" in url else os.path.abspath(url)


class FileRoot:
    """A root directory on a pyarrow filesystem; every path handed in is relative to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        if "://" in url:
            self.fs, root = filesystem(url)
        else:
            self.fs, root = pafs.LocalFileSystem(), os.path.abspath(url)
        self.root = root.rstrip("/")
        self.fs.create_dir(self.root, recursive=True)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def files(self, under: str) -> list[str]:
        """Every file below ``under`` (relative paths), none if it does not exist."""
        selector = pafs.FileSelector(self.path(under), recursive=True, allow_not_found=True)
        prefix = len(self.root) + 1
        return sorted(
            info.path[prefix:]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def delete_dir(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.path(rel))

    def _commit(self, tmp: str, rel: str) -> None:
        """Move a finished temporary file to its name: a rename on a local disk (atomic),
        a server-side copy on object stores (whose objects appear whole or not at all)."""
        self.fs.move(self.path(tmp), self.path(rel))

    def _digest(self, rel: str) -> tuple[str, int]:
        sha = hashlib.sha256()
        size = 0
        with self.fs.open_input_stream(self.path(rel)) as stream:
            while chunk := stream.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
        return sha.hexdigest(), size

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as stream:
            data: bytes = stream.read()
        return data

    def write_table(self, rel: str, table: pa.Table, run: str) -> dict[str, Any]:
        """Write ``table`` as ``rel`` (temporary name, checksum of what landed, move)."""
        return self.write_batches(rel, table.schema, [table], run)

    def write_batches(
        self, rel: str, schema: pa.Schema, parts: Iterable[pa.Table | pa.RecordBatch], run: str
    ) -> dict[str, Any]:
        tmp = f"{rel}.tmp-{run}"
        self.fs.create_dir(self.path(rel.rpartition("/")[0]), recursive=True)
        rows = 0
        with pq.ParquetWriter(self.path(tmp), schema, filesystem=self.fs) as writer:
            for part in parts:
                if isinstance(part, pa.RecordBatch):
                    writer.write_batch(part)
                else:
                    writer.write_table(part)
                rows += part.num_rows
        sha, size = self._digest(tmp)
        self._commit(tmp, rel)
        return {"path": rel, "rows": rows, "bytes": size, "sha256": sha, "run": run}

    def read_json(self, rel: str) -> Any:
        """The JSON document at ``rel`` (``None`` when there is none)."""
        try:
            return msgspec.json.decode(self.read_bytes(rel))
        except FileNotFoundError:
            return None

    def write_json(self, rel: str, document: Any, run: str) -> None:
        """Replace ``rel`` in one move (the commit point of a manifest)."""
        tmp = f"{rel}.tmp-{run}"
        with self.fs.open_output_stream(self.path(tmp)) as stream:
            stream.write(msgspec.json.format(_encoder.encode(document), indent=1))
        self._commit(tmp, rel)
