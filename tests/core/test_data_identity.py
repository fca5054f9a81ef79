"""The data is part of a run's identity: its content names the run, its location does not."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmark.config.loader import build_config
from benchmark.data import content_hash
from benchmark.data.fingerprint import data_fingerprint, read_paths
from benchmark.errors import DataError
from benchmark.tracking.run_id import compute_run_id

ANNOTATIONS = "hateful_memes/defaults/annotations"


def _write_data(data_dir: Path, lines: int = 20) -> Path:
    """Files where hateful_memes' config looks for them; the fingerprint never parses them."""
    root = data_dir / "datasets"
    ann = root / ANNOTATIONS
    ann.mkdir(parents=True)
    for name in ("train", "dev_unseen", "test_unseen"):
        (ann / f"{name}.jsonl").write_text("".join(f'{{"id": {i}, "text": "t{i}", "label": 0}}\n' for i in range(lines)))
    lmdb = root / "hateful_memes/defaults/features/detectron.lmdb"
    lmdb.mkdir(parents=True)
    (lmdb / "data.mdb").write_bytes(os.urandom(4096))
    (lmdb / "lock.mdb").write_bytes(b"\0" * 64)
    return data_dir


def _config(data_dir: Path | str, tmp_path: Path, *extra: str):
    return build_config(["dataset=hateful_memes", "method=teacher", f"env.data_dir={data_dir}",
                         f"env.cache_dir={tmp_path / 'cache'}", f"env.save_dir={tmp_path / 'runs'}", *extra])


@pytest.fixture
def data(tmp_path: Path) -> Path:
    content_hash._memo.clear()
    yield _write_data(tmp_path / "data")
    content_hash._memo.clear()


def _train_file(data: Path) -> Path:
    return data / "datasets" / ANNOTATIONS / "train.jsonl"


def test_the_run_reads_annotations_features_and_no_lock_file(data, tmp_path):
    paths = read_paths(_config(data, tmp_path))
    assert f"{ANNOTATIONS}/train.jsonl" in paths and "hateful_memes/defaults/features/detectron.lmdb" in paths
    before = compute_run_id(_config(data, tmp_path))
    (data / "datasets/hateful_memes/defaults/features/detectron.lmdb/lock.mdb").write_bytes(b"\1" * 64)
    assert compute_run_id(_config(data, tmp_path)) == before  # LMDB's reader table is not data


def test_truncated_or_edited_data_is_another_run(data, tmp_path):
    original = compute_run_id(_config(data, tmp_path))
    train = _train_file(data)
    lines = train.read_text().splitlines(keepends=True)
    train.write_text("".join(lines[: len(lines) // 2]))  # cut at a line boundary
    truncated = compute_run_id(_config(data, tmp_path))
    train.write_text("".join(lines))
    assert compute_run_id(_config(data, tmp_path)) == original  # the same bytes again: the same run
    stat = train.stat()
    train.write_text("".join(lines).replace('"t3"', '"t4"'))  # one line, same size
    os.utime(train, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the mtime put back
    edited = compute_run_id(_config(data, tmp_path))
    assert len({original, truncated, edited}) == 3


def test_features_change_the_run_id(data, tmp_path):
    original = compute_run_id(_config(data, tmp_path))
    (data / "datasets/hateful_memes/defaults/features/detectron.lmdb/data.mdb").write_bytes(os.urandom(4096))
    assert compute_run_id(_config(data, tmp_path)) != original


def test_where_the_data_lives_is_not_the_run(data, tmp_path, monkeypatch):
    reference = compute_run_id(_config(data, tmp_path))
    assert compute_run_id(_config(f"{data}/", tmp_path)) == reference
    assert compute_run_id(_config(f"{data}//", tmp_path)) == reference
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compute_run_id(_config("~/data", tmp_path)) == reference
    link = tmp_path / "link"
    link.symlink_to(data, target_is_directory=True)
    assert compute_run_id(_config(link, tmp_path)) == reference
    moved = tmp_path / "elsewhere" / "data"  # another machine: a copy, new inodes and ctimes
    shutil.copytree(data, moved)
    assert compute_run_id(_config(moved, tmp_path)) == reference


def test_the_config_holds_one_spelling_of_the_data_path(data, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    link = tmp_path / "link"
    link.symlink_to(data, target_is_directory=True)
    for spelling in (f"{data}/", "~/data", str(link)):
        config = _config(spelling, tmp_path)
        assert config.env.data_dir == str(data.resolve())
        assert config.dataset_config.hateful_memes.data_dir == str(data.resolve() / "datasets")


def test_a_reuse_reads_the_sidecar_not_the_data(data, tmp_path, monkeypatch):
    config = _config(data, tmp_path)
    first = data_fingerprint(config)
    sidecar = content_hash.sidecar_path(_train_file(data))
    assert json.loads(sidecar.read_text())["files"][""][3] == first.files[f"{ANNOTATIONS}/train.jsonl"]
    content_hash._memo.clear()  # a new process
    calls = []
    monkeypatch.setattr(content_hash, "hash_file", lambda path: calls.append(path) or "x")
    assert data_fingerprint(config) == first and calls == []


def test_read_only_data_keeps_its_sidecar_in_the_cache_dir(data, tmp_path, monkeypatch):
    real_write = content_hash._atomic_write

    def read_only(target: Path, text: str) -> None:
        if str(target).startswith(str(data)):
            raise PermissionError(13, "Read-only file system", str(target))
        real_write(target, text)

    monkeypatch.setattr(content_hash, "_atomic_write", read_only)
    config = _config(data, tmp_path)
    first = data_fingerprint(config)
    assert not list(data.rglob("*.msd-fingerprint.json"))
    assert list((tmp_path / "cache" / "data-fingerprints").glob("*.json"))
    content_hash._memo.clear()
    calls = []
    monkeypatch.setattr(content_hash, "hash_file", lambda path: calls.append(path) or "x")
    assert data_fingerprint(config) == first and calls == []


def _stale_sidecar_after_edit(path: Path) -> None:
    """Change a file's bytes while its sidecar still vouches for the old ones (what a
    filesystem without a real ctime, or a sidecar copied over the data, can leave)."""
    sidecar = content_hash.sidecar_path(path)
    payload = json.loads(sidecar.read_text())
    old_hash = payload["files"][""][3]
    data = bytearray(path.read_bytes())
    data[5] ^= 1  # one character of the first line, same size
    path.write_bytes(bytes(data))
    stat = path.stat()
    payload["files"][""] = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, old_hash]
    sidecar.write_text(json.dumps(payload))
    content_hash._memo.clear()


def test_a_resume_over_changed_data_is_refused(data, tmp_path):
    from benchmark.tracking.run_store import RunStore
    from benchmark.train.checkpoint import LAST
    from benchmark.train.trainer import run_experiment

    config = _config(data, tmp_path)
    run_id = compute_run_id(config)
    run = RunStore(config.env.save_dir).run(run_id)
    run.write_summary({"run_id": run_id, "status": "interrupted",
                       "data_fingerprint": data_fingerprint(config).to_dict()})
    run.file(LAST).write_bytes(b"a training state")
    _stale_sidecar_after_edit(_train_file(data))
    assert compute_run_id(config) == run_id  # the stale sidecar hides the edit from the run id
    with pytest.raises(DataError, match=rf"{run_id} cannot resume.*{ANNOTATIONS}/train.jsonl"):
        run_experiment(config, progress=False)
    assert run.read_summary()["status"] == "interrupted"  # nothing written
    assert compute_run_id(config) != run_id  # the sidecar is refreshed: the next command is a new run


def test_a_resume_over_the_same_data_records_and_passes_the_check(data, tmp_path):
    from benchmark.data.fingerprint import refuse_changed_data

    config = _config(data, tmp_path)
    recorded = data_fingerprint(config).to_dict()
    refuse_changed_data(config, recorded, "r")  # unchanged: no error
    refuse_changed_data(config, None, "r")  # a run that recorded nothing is not checked
    _train_file(data).write_text("{}\n")
    with pytest.raises(DataError, match="train.jsonl"):
        refuse_changed_data(config, recorded, "r")


class _StopAfter:
    """A kill after the first checkpoint: the run is left interrupted with its last.pt."""

    def on_start(self, run, config):
        pass

    def on_log(self, record, step):
        if step >= 2 and record.get("type") == "train":
            raise KeyboardInterrupt

    def on_finish(self, summary):
        pass


def test_a_real_run_records_its_data_and_refuses_to_resume_over_an_edit(tmp_path):
    from benchmark.data.make import make_dataset
    from benchmark.tracking.run_store import RunStore
    from benchmark.train.trainer import run_experiment

    content_hash._memo.clear()
    make_dataset("hateful_memes", tmp_path / "data", size=64, seed=0)
    config = _config(tmp_path / "data", tmp_path, "method=student_only", "training.max_epochs=1",
                     "training.batch_size=16", "training.log_interval=1", "training.evaluation_interval=1",
                     "training.threads=1", "tracking.wandb.enabled=false")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False, callbacks=(_StopAfter(),))
    run = RunStore(config.env.save_dir).run(compute_run_id(config))
    recorded = run.read_summary()["data_fingerprint"]
    assert recorded == data_fingerprint(config).to_dict() and run.file("last.pt").exists()
    _stale_sidecar_after_edit(_train_file(tmp_path / "data"))
    with pytest.raises(DataError, match="train.jsonl"):
        run_experiment(config, progress=False)
    assert run.read_summary()["data_fingerprint"] == recorded and run.file("last.pt").exists()
    content_hash._memo.clear()
