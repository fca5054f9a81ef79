"""Row-chunked ``.npy`` arrays with a checksum per chunk: written with bounded memory, verified lazily.

The teacher cache at VQA2 size is 443,757 x 3 x 3,129 float16 logits (8.3 GB) for train alone.
Two things follow, and this module does both without knowing what the rows mean:

* **Writing** keeps only the chunk(s) being filled in memory (:class:`ChunkedArrayWriter`):
  rows are assembled into a fixed-size row chunk, the chunk is hashed and written with
  ``pwrite`` at its place in the file, then dropped. Plain writes, not a writable memory map,
  because the dirty pages of a memory-mapped 8 GB file count towards the process' resident
  memory until the kernel writes them back.
* **Reading** memory-maps the file and checks a chunk's checksum the first time any of its rows
  is read (:class:`ChunkedArray`), so opening costs a ``stat`` and a header read whatever the
  size, and a damaged chunk is refused before any of its values reach a student.

Why one ``.npy`` file per array with chunk-aligned rows rather than one file per chunk: a chunk
is a contiguous byte range of a C-ordered array, so the file stays a plain ``.npy`` that
``np.load(..., mmap_mode="r")`` opens; one memory map serves any batch (a batch of 32 random
rows would otherwise open up to 32 files), and the directory holds two files per split, not
thousands. Checksums are per chunk either way.

The verification bytes are read through the same open file the memory map was made from, so a
cache replaced on disk (rebuilt by another process) while this one is open cannot mix the old
map with the new file's bytes.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import xxhash

from benchmark.errors import UserError

HASHES: dict[str, Callable[[Any], str]] = {
    "xxh3_128": lambda buffer: xxhash.xxh3_128_hexdigest(buffer),
    "blake2b": lambda buffer: hashlib.blake2b(buffer, digest_size=16).hexdigest(),
}
"""Chunk checksums by name. The name is stored with the checksums, so a cache stays verifiable
if the default changes. xxh3_128 is the default: it detects accidental damage (what a cache
needs; nobody forges a cache) at memory speed, about 40x blake2b's rate on this project's
machine (``bench/cache_bench.py`` measures both)."""

DEFAULT_HASH = "xxh3_128"
CHUNK_BYTES = 4 << 20
"""Target bytes per chunk. A batch of 32 random rows touches up to 32 chunks, so the first read of
a batch may hash 32 x 4 MiB; 4 MiB keeps that first touch in the tens of milliseconds while an
8.3 GB array still has only ~2,000 checksums in meta.json."""


class StaleCacheError(RuntimeError):
    """The cache on disk does not match what it claims to hold; the normal path rebuilds it."""


class CorruptCacheError(StaleCacheError, UserError):
    """A chunk's bytes differ from the checksum written when it was built.

    Raised on open (the caller rebuilds) or during reads (training stops: its values must not
    be used). A :class:`UserError`, so the CLI prints the message (which says how to rebuild)
    without a traceback.
    """


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def chunk_rows_for(row_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk: as many whole rows as fit in ``chunk_bytes``, at least one."""
    return max(1, int(chunk_bytes) // max(1, int(row_bytes)))


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class ChunkedArrayWriter:
    """Writes one ``.npy`` array of known shape, chunk by chunk, in any row order.

    Memory holds the chunks that have some but not all of their rows: one or two when rows come
    in order (an unshuffled loader), which is how the cache is built. :meth:`finish` refuses an
    array with rows never written, and returns the spec that :class:`ChunkedArray` reads.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any, chunk_rows: int,
                 hash_name: str = DEFAULT_HASH) -> None:
        if hash_name not in HASHES:
            raise ValueError(f"unknown hash {hash_name!r}; known: {sorted(HASHES)}")
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.chunk_rows = int(chunk_rows)
        self.hash_name = hash_name
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.n_chunks = math.ceil(self.shape[0] / self.chunk_rows)
        self._checksums: list[str | None] = [None] * self.n_chunks
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._file: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115 - closed by finish/close
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._file, header)
        self._file.flush()
        self.offset = self._file.tell()

    def _chunk_length(self, k: int) -> int:
        return min(self.chunk_rows, self.shape[0] - k * self.chunk_rows)

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Store ``values[i]`` as row ``rows[i]``; every row must be written exactly once."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=self.dtype)
        if values.shape != (rows.size, *self.row_shape):
            raise ValueError(f"{self.path.name}: values of shape {values.shape} for {rows.size} rows of "
                             f"shape {self.row_shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise ValueError(f"{self.path.name}: row index out of range [0, {self.shape[0]})")
        chunks = rows // self.chunk_rows
        for k in np.unique(chunks).tolist():
            if self._checksums[k] is not None:
                raise ValueError(f"{self.path.name}: chunk {k} was already complete; a row was written twice")
            selected = chunks == k
            if k not in self._pending:
                length = self._chunk_length(k)
                self._pending[k] = (np.empty((length, *self.row_shape), self.dtype), np.zeros(length, dtype=bool))
            buffer, filled = self._pending[k]
            local = rows[selected] - k * self.chunk_rows
            if filled[local].any() or np.unique(local).size != local.size:
                raise ValueError(f"{self.path.name}: a row of chunk {k} was written twice")
            buffer[local] = values[selected]
            filled[local] = True
            if filled.all():
                self._flush(k)

    def _flush(self, k: int) -> None:
        buffer, _ = self._pending.pop(k)
        data = memoryview(np.ascontiguousarray(buffer)).cast("B")
        self._checksums[k] = HASHES[self.hash_name](data)
        _write_all(self._file.fileno(), data, self.offset + k * self.chunk_rows * self.row_bytes)

    def finish(self) -> dict[str, Any]:
        """Close the file (synced to disk) and return its spec for meta.json."""
        missing = [k for k, c in enumerate(self._checksums) if c is None]
        if missing:
            raise ValueError(f"{self.path.name}: {len(missing)} chunk(s) have rows never written "
                             f"(first: chunk {missing[0]})")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.close()
        return {"file": self.path.name, "dtype": self.dtype.str, "shape": list(self.shape), "offset": self.offset,
                "chunk_rows": self.chunk_rows, "hash": self.hash_name, "checksums": list(self._checksums)}

    def close(self) -> None:
        self._pending.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ChunkedArrayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChunkedArray:
    """A read-only memory map of one array written by :class:`ChunkedArrayWriter`.

    ``verify_reads`` (the default) checks each chunk's checksum the first time :meth:`take`
    reads a row of it; ``describe`` names the array in errors and ``rebuild_hint`` says what to
    run about a damaged chunk. Nothing here writes.
    """

    def __init__(self, directory: Path, spec: dict[str, Any], describe: str = "",
                 rebuild_hint: str = "", verify_reads: bool = True) -> None:
        self.path = Path(directory) / str(spec["file"])
        self.shape = tuple(int(s) for s in spec["shape"])
        self.dtype = np.dtype(spec["dtype"])
        self.offset = int(spec["offset"])
        self.chunk_rows = int(spec["chunk_rows"])
        self.hash_name = str(spec["hash"])
        self.checksums = list(spec["checksums"])
        self.describe = describe or self.path.name
        self.rebuild_hint = rebuild_hint
        self.verify_reads = verify_reads
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.n_chunks = math.ceil(self.shape[0] / max(self.chunk_rows, 1))
        self.verified = np.zeros(self.n_chunks, dtype=bool)
        self._file: IO[bytes] | None = None
        self._map: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def check_layout(self) -> None:
        """File size, ``.npy`` header and checksum count against the spec: catches truncation
        and a file from another build, for the price of a ``stat`` and a header read."""
        if self.hash_name not in HASHES:
            raise StaleCacheError(f"{self.describe}: unknown checksum {self.hash_name!r}")
        if self.chunk_rows <= 0 or len(self.checksums) != self.n_chunks:
            raise StaleCacheError(f"{self.describe}: {len(self.checksums)} checksums for {self.n_chunks} chunks")
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as handle:
                read_header = _HEADER_READERS.get(np.lib.format.read_magic(handle))
                if read_header is None:
                    raise ValueError("unsupported .npy format version")
                shape, fortran, dtype = read_header(handle)
                offset = handle.tell()
        except (OSError, ValueError) as exc:
            raise StaleCacheError(f"{self.path.name} is unreadable ({exc})") from exc
        if (tuple(shape), bool(fortran), np.dtype(dtype), offset) != (self.shape, False, self.dtype, self.offset):
            raise StaleCacheError(f"{self.path.name} holds {dtype} {tuple(shape)} at byte {offset}, expected "
                                  f"{self.dtype} {self.shape} at byte {self.offset}")
        expected = self.offset + self.nbytes
        if size != expected:
            raise StaleCacheError(f"{self.path.name} is {size:,} bytes, expected {expected:,} (truncated or overwritten)")

    def _handle(self) -> IO[bytes]:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open for the map's lifetime
        return self._file

    @property
    def array(self) -> np.ndarray:
        """The memory map (made on first use, from the same open file the checksums are read from)."""
        if self._map is None and self.nbytes == 0:  # mmap cannot map zero bytes
            self._map = np.empty(self.shape, dtype=self.dtype)
        if self._map is None:
            self._map = np.memmap(self._handle(), dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        return self._map

    def chunk_range(self, k: int) -> tuple[int, int]:
        return k * self.chunk_rows, min(self.shape[0], (k + 1) * self.chunk_rows)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``array[rows]``, after checking every chunk those rows fall in (once per chunk)."""
        rows = np.asarray(rows)
        if self.verify_reads and rows.size:
            chunks = np.unique(rows.reshape(-1) // self.chunk_rows)
            chunks = chunks[(chunks >= 0) & (chunks < self.n_chunks)]
            for k in chunks[~self.verified[chunks]].tolist():
                self.verify_chunk(k)
        return self.array[rows]

    def verify_chunk(self, k: int, buffer: np.ndarray | None = None) -> None:
        """Hash chunk ``k``'s bytes as they are on disk; :class:`CorruptCacheError` on a mismatch."""
        start, stop = self.chunk_range(k)
        length = (stop - start) * self.row_bytes
        if buffer is None or buffer.size < length:
            buffer = np.empty(length, dtype=np.uint8)
        view = memoryview(buffer)[:length]
        got = os.preadv(self._handle().fileno(), [view], self.offset + start * self.row_bytes)
        actual = HASHES[self.hash_name](view) if got == length else f"short read ({got:,} of {length:,} bytes)"
        if actual != self.checksums[k]:
            raise CorruptCacheError(
                f"{self.describe}: chunk {k} of {self.n_chunks} (rows {start:,}-{stop - 1:,}) does not match the "
                f"{self.hash_name} checksum written when the cache was built ({actual} != {self.checksums[k]}). "
                "The file was changed or damaged after it was built, so none of its values are used. "
                f"{self.rebuild_hint}".strip()
            )
        self.verified[k] = True

    def verify_all(self) -> Iterator[int]:
        """Check every chunk not yet checked, yielding the bytes of each as it passes (for progress)."""
        buffer = np.empty(self.chunk_rows * self.row_bytes, dtype=np.uint8)
        for k in range(self.n_chunks):
            if not self.verified[k]:
                self.verify_chunk(k, buffer)
            start, stop = self.chunk_range(k)
            yield (stop - start) * self.row_bytes

    def close(self) -> None:
        self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None
