"""Chunked, checksummed arrays: bounded writes, lazy verification, every kind of damage found."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.distill.cache_store import (
    ChunkedArray,
    ChunkedArrayWriter,
    CorruptCacheError,
    StaleCacheError,
    chunk_rows_for,
)
from benchmark.errors import UserError

N, ROW = 2000, (3, 5)


def _values(n: int = N) -> np.ndarray:
    return np.arange(n * 15, dtype=np.float32).reshape(n, *ROW) / 7.0


def _write(tmp_path, values, chunk_rows=128, order=None, batch=50, hash_name="xxh3_128"):
    order = np.arange(len(values)) if order is None else order
    with ChunkedArrayWriter(tmp_path / "a.npy", values.shape, values.dtype, chunk_rows, hash_name) as writer:
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            writer.write(rows, values[rows])
        return writer.finish()


def _zero_row_on_disk(spec, path, row):
    array = np.load(path, mmap_mode="r+")
    array[row] = 0
    array.flush()
    del array


def test_written_file_is_a_plain_npy_with_one_checksum_per_chunk(tmp_path):
    values = _values()
    spec = _write(tmp_path, values, chunk_rows=128)
    assert np.array_equal(np.load(tmp_path / "a.npy"), values)
    assert spec["shape"] == [N, 3, 5] and spec["chunk_rows"] == 128
    assert len(spec["checksums"]) == 16 and len(set(spec["checksums"])) == 16  # ceil(2000 / 128)
    reader = ChunkedArray(tmp_path, spec)
    reader.check_layout()
    rows = np.array([1999, 0, 640, 641, 5])
    assert np.array_equal(reader.take(rows), values[rows])
    assert sorted(np.flatnonzero(reader.verified).tolist()) == [0, 5, 15]  # only the chunks read


def test_rows_in_any_order_give_the_same_file_and_checksums(tmp_path):
    values = _values()
    in_order = _write(tmp_path, values)
    (tmp_path / "a.npy").rename(tmp_path / "first.npy")
    shuffled = _write(tmp_path, values, order=np.random.default_rng(0).permutation(N))
    assert shuffled["checksums"] == in_order["checksums"]
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "first.npy").read_bytes()


def test_writer_holds_at_most_two_chunks_when_rows_come_in_order(tmp_path):
    values = _values()
    writer = ChunkedArrayWriter(tmp_path / "a.npy", values.shape, values.dtype, chunk_rows=100)
    most = 0
    for start in range(0, N, 64):  # batches that straddle chunk boundaries
        writer.write(np.arange(start, min(N, start + 64)), values[start:start + 64])
        most = max(most, len(writer._pending))
    writer.finish()
    assert most <= 2


def test_missing_and_duplicate_rows_are_refused(tmp_path):
    values = _values(10)
    writer = ChunkedArrayWriter(tmp_path / "a.npy", values.shape, values.dtype, chunk_rows=4)
    writer.write(np.arange(9), values[:9])
    with pytest.raises(ValueError, match="written twice"):
        writer.write(np.array([8]), values[8:9])
    with pytest.raises(ValueError, match="never written"):
        writer.finish()
    writer.close()


def test_one_zeroed_row_in_two_thousand_is_found_by_its_chunk_only(tmp_path):
    values = _values()
    spec = _write(tmp_path, values, chunk_rows=128)
    _zero_row_on_disk(spec, tmp_path / "a.npy", 1234)  # chunk 9
    reader = ChunkedArray(tmp_path, spec, describe="train.logits", rebuild_hint="Rebuild it.")
    reader.check_layout()  # sizes and header are intact: only a checksum can see this
    assert np.array_equal(reader.take(np.arange(0, 1100)), values[:1100])  # chunks 0-8 are fine
    with pytest.raises(CorruptCacheError, match=r"train\.logits: chunk 9 of 16 \(rows 1,152-1,279\).*Rebuild it\."):
        reader.take(np.array([1200]))
    with pytest.raises(CorruptCacheError):  # and again: a bad chunk is never marked as checked
        reader.take(np.array([1300, 1250]))
    assert issubclass(CorruptCacheError, StaleCacheError) and issubclass(CorruptCacheError, UserError)


def test_verify_all_finds_damage_that_reads_have_not_reached(tmp_path):
    spec = _write(tmp_path, _values(), chunk_rows=128)
    reader = ChunkedArray(tmp_path, spec)
    assert sum(reader.verify_all()) == N * 15 * 4
    _zero_row_on_disk(spec, tmp_path / "a.npy", 1999)
    fresh = ChunkedArray(tmp_path, spec)
    with pytest.raises(CorruptCacheError, match="chunk 15 of 16"):
        list(fresh.verify_all())


@pytest.mark.parametrize("damage", ["truncate", "append", "shape"])
def test_layout_damage_is_seen_without_reading_data(tmp_path, damage):
    values = _values()
    spec = _write(tmp_path, values)
    path = tmp_path / "a.npy"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "append":
        path.write_bytes(path.read_bytes() + b"\0" * 60)
    else:
        np.save(path, values[:1000])
    with pytest.raises(StaleCacheError, match="a.npy"):
        ChunkedArray(tmp_path, spec).check_layout()


def test_blake2b_checksums_are_verified_too(tmp_path):
    spec = _write(tmp_path, _values(), hash_name="blake2b")
    assert spec["hash"] == "blake2b"
    assert sum(ChunkedArray(tmp_path, spec).verify_all()) > 0
    _zero_row_on_disk(spec, tmp_path / "a.npy", 3)
    with pytest.raises(CorruptCacheError, match="blake2b"):
        ChunkedArray(tmp_path, spec).take(np.array([0]))


def test_a_short_final_chunk_and_an_empty_array(tmp_path):
    spec = _write(tmp_path, _values(130), chunk_rows=128)
    reader = ChunkedArray(tmp_path, spec)
    assert reader.chunk_range(1) == (128, 130) and np.array_equal(reader.take(np.array([129])), _values(130)[[129]])
    empty = ChunkedArrayWriter(tmp_path / "e.npy", (0, 3), np.float16, chunk_rows=8).finish()
    reader = ChunkedArray(tmp_path, empty)
    reader.check_layout()
    assert reader.take(np.array([], dtype=np.int64)).shape == (0, 3)


def test_chunk_rows_fill_the_target_bytes():
    assert chunk_rows_for(3 * 3129 * 2, 4 << 20) == 223  # a VQA2 logits row is 18,774 bytes
    assert chunk_rows_for(10 << 20, 4 << 20) == 1  # a row larger than a chunk is a chunk
