"""Run integrity: one process trains a run, run states are true, a crash ends ``failed`` with a
non-empty ``error.log`` and one paragraph, a SIGTERM ends ``interrupted`` and resumes.

Runs here are tiny (64 samples, one epoch, a student-size model) and trained in-process; the
concurrent-process and kill -9 cases at scale are ``bench/chaos.py`` (and its slow test).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.grid.locks import FileLock, RunBusyError, run_lock, run_lock_path
from benchmark.tracking import failure
from benchmark.tracking.failure import DiskReserve, Terminated, record_failure, sigterm_interrupts
from benchmark.tracking.liveness import HEARTBEAT_FILE, Heartbeat, heartbeat_alive, owner_record, pid_alive
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_status import true_status
from benchmark.tracking.run_store import RunStore
from benchmark.tracking.runs_table import collect_rows, runs_table
from benchmark.train.trainer import TrainingDivergedError, run_experiment

RUN = ["dataset=hateful_memes", "model=late_fusion", "method=student_only", "training.max_epochs=1",
       "training.batch_size=32", "training.threads=1", "training.log_interval=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_dataset("hateful_memes", root, size=64, seed=0)
    return root


@pytest.fixture
def env(data_dir, tmp_path, monkeypatch) -> list[str]:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("MSD_DEBUG", raising=False)
    return [f"env.data_dir={data_dir}", f"env.save_dir={tmp_path / 'runs'}", f"env.cache_dir={tmp_path / 'cache'}"]


class _At:
    """A callback that does something at a training step (a signal, an exception)."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action = step, action

    def on_start(self, run, config):
        pass

    def on_log(self, record, step):
        if step >= self.step and record.get("type") == "train":
            self.action()

    def on_finish(self, summary):
        pass


# -- liveness and true states ------------------------------------------------------------------
def test_a_dead_process_is_told_apart_from_a_live_one_by_pid_and_by_heartbeat_age():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": socket.gethostname(), "pid": child.pid, "start": None, "beat_at": time.time()}
        assert pid_alive(child.pid) and heartbeat_alive(record)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid) and not heartbeat_alive(record)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; not reaped until wait()
    deadline = time.time() + 30
    while time.time() < deadline and Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.05)
    assert not pid_alive(zombie.pid)  # a worker that exited but was not yet reaped trains nothing
    zombie.wait()
    reused = {**owner_record(), "start": -1, "beat_at": time.time()}  # our pid, another start time
    assert not heartbeat_alive(reused)
    elsewhere = {"host": "another-node", "pid": 1, "beat_at": 1000.0}
    assert heartbeat_alive(elsewhere, now=1000.0 + 30, stale_after=60)
    assert not heartbeat_alive(elsewhere, now=1000.0 + 61, stale_after=60)


def test_a_running_summary_is_running_only_while_its_heartbeat_lives(tmp_path):
    run = RunStore(tmp_path).run("r")
    run.path.mkdir()
    run.write_summary({"status": "running"})
    assert run.status == "interrupted"  # no heartbeat: the process is gone (kill -9)
    beat = Heartbeat(run.path, interval=0.05, progress=lambda: {"step": 7, "epochs_started": 1}).start()
    try:
        assert run.status == "running"
        first = run.read_heartbeat()["beat_at"]
        time.sleep(0.3)
        assert run.read_heartbeat()["beat_at"] > first  # the thread keeps beating
        assert run.progress()[:2] == (1, 7)
    finally:
        beat.stop()
    assert not (run.path / HEARTBEAT_FILE).exists() and run.status == "interrupted"
    assert true_status({"status": "failed"}, run.path) == "failed" and true_status(None, run.path) == "todo"


# -- one process per run -----------------------------------------------------------------------
def test_the_run_lock_refuses_or_waits_and_names_its_holder(tmp_path):
    holder = FileLock(run_lock_path(tmp_path, "r1"))
    assert holder.acquire(blocking=False)
    try:
        with pytest.raises(RunBusyError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"), \
                run_lock(tmp_path, "r1", wait=False):
            pass
        said: list[str] = []
        threading.Timer(0.5, holder.release).start()
        tick = time.time()
        with run_lock(tmp_path, "r1", announce=said.append):
            waited = time.time() - tick
        assert waited >= 0.4 and "waiting" in said[0] and f"pid {os.getpid()}" in said[0]
        with run_lock(tmp_path, "r1", enabled=False) as lock:  # a rank other than 0 holds nothing
            assert lock is None
    finally:
        holder.release()


def test_msd_run_refuses_with_no_wait_and_otherwise_waits_then_reports_the_finished_run(env):
    config = build_config([*RUN, *env])
    run_id = compute_run_id(config)
    holder = FileLock(run_lock_path(config.env.save_dir, run_id))
    assert holder.acquire(blocking=False)
    try:
        refused = CliRunner().invoke(app, ["run", "--no-wait", "--no-progress", *RUN, *env])
        assert isinstance(refused.exception, RunBusyError)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(refused.exception)
        assert not (Path(config.env.save_dir) / run_id).exists()  # nothing trained, nothing written
        run_experiment(config, progress=False)  # "the other process" finishes the run meanwhile
        threading.Timer(1.0, holder.release).start()
        waited = CliRunner().invoke(app, ["run", "--no-progress", *RUN, *env])
    finally:
        holder.release()
    assert waited.exit_code == 0, waited.output
    assert "waiting for it" in waited.stderr and "already complete, skipped" in waited.stdout
    metrics = RunStore(config.env.save_dir).run(run_id).read_metrics()
    assert sum(r["type"] == "final" for r in metrics) == 1  # trained once


# -- crashes end cleanly -----------------------------------------------------------------------
def test_nan_loss_fails_with_error_log_and_one_paragraph_traceback_only_with_debug(env):
    args = ["run", "--no-progress", *RUN, *env, "optimizer.params.lr=1e30", "training.clip_grad_norm=null"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    paragraph = " ".join(result.stderr.split())
    assert "failed: Loss became non-finite" in paragraph and "error.log" in paragraph and "--debug" in paragraph
    run = RunStore(build_config([*RUN, *env]).env.save_dir).run(compute_run_id(build_config([*RUN, *env, *args[-2:]])))
    assert run.status == "failed" and run.file("error.log").read_text().startswith("Loss became non-finite")
    debug = CliRunner().invoke(app, [args[0], "--debug", *args[1:]])
    assert isinstance(debug.exception, TrainingDivergedError)  # re-raised: the traceback is printed


def test_out_of_memory_fails_with_what_to_lower(env):
    config = build_config([*RUN, *env])

    def oom():
        raise MemoryError()

    with pytest.raises(MemoryError) as caught:
        run_experiment(config, progress=False, callbacks=(_At(1, oom),))
    run = RunStore(config.env.save_dir).run(compute_run_id(config))
    assert run.status == "failed" and run.file("error.log").stat().st_size > 0
    assert "training.batch_size" in caught.value.run_failure.paragraph()
    gpu = failure.describe(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "out of GPU memory" in gpu and "training.fp16" in gpu


def test_sigterm_marks_the_run_interrupted_and_it_resumes(env):
    config = build_config([*RUN, *env, "training.max_epochs=3", "training.evaluation_interval=1"])
    with pytest.raises(Terminated), sigterm_interrupts():
        run_experiment(config, progress=False, callbacks=(_At(3, lambda: os.kill(os.getpid(), signal.SIGTERM)),))
    run = RunStore(config.env.save_dir).run(compute_run_id(config))
    assert run.status == "interrupted" and run.file("last.pt").exists()
    assert "SIGTERM" in run.file("error.log").read_text() and not run.file(HEARTBEAT_FILE).exists()
    resumed = run_experiment(config, progress=False)
    assert resumed.summary["status"] == "completed" and resumed.summary["resumed_from_step"] >= 2


def test_a_run_killed_before_its_first_checkpoint_restarts_without_its_old_rows(env):
    config = build_config([*RUN, *env, "training.evaluation_interval=100"])

    def killed():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False, callbacks=(_At(1, killed),))
    run = RunStore(config.env.save_dir).run(compute_run_id(config))
    assert not run.file("last.pt").exists() and [r["type"] for r in run.read_metrics()] == ["train"]
    run_experiment(config, progress=False)
    keys = [(r["type"], r["trainer/global_step"]) for r in run.read_metrics()]
    assert len(keys) == len(set(keys)) and keys.count(("train", 1)) == 1


def test_a_run_killed_after_its_final_evaluation_resumes_with_one_final_record(env):
    config = build_config([*RUN, *env])

    class KilledAtFinal(_At):
        def on_log(self, record, step):
            if record.get("type") == "final":
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False, callbacks=(KilledAtFinal(0, None),))
    run = RunStore(config.env.save_dir).run(compute_run_id(config))
    assert run.status == "interrupted" and run.file("last.pt").exists()
    run_experiment(config, progress=False)
    assert [r["type"] for r in run.read_metrics()].count("final") == 1 and run.is_complete()


def test_a_full_disk_while_writing_error_log_still_leaves_its_first_line_and_says_so(tmp_path, monkeypatch, capsys):
    """Fault injected into the writer: the traceback write fails with ENOSPC."""
    real_open = open

    class FullAfterFirstWrite:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(text)

        def flush(self):
            self.handle.flush()

    monkeypatch.setattr(failure, "open", lambda *a, **k: FullAfterFirstWrite(real_open(*a, **k)), raising=False)
    try:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "last.pt"))
    except OSError as exc:
        message = failure.describe(exc)
        log, note = record_failure(tmp_path, {"status": "failed"}, message, exc, None)
    assert "disk is full" in message and "last.pt" in message
    assert log is not None and log.read_text().startswith("the disk is full")
    assert "stderr" in note and "Traceback" in capsys.readouterr().err


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-fault test covers the writer")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)  # lazily: a failed torch.save may hold a file


def _fill(path: Path) -> None:
    try:
        with open(path, "wb", buffering=0) as handle:
            while True:
                handle.write(b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


def test_on_a_really_full_disk_the_reserve_pays_for_error_log_and_summary(tiny_tmpfs):
    run_path = tiny_tmpfs / "run"
    DiskReserve(run_path).create()
    assert (run_path / failure.RESERVE_FILE).stat().st_size == failure.RESERVE_BYTES
    _fill(tiny_tmpfs / "filler")
    try:
        (run_path / "probe").write_text("x" * 10000)
        pytest.fail("the tmpfs is not full")
    except OSError:
        pass
    exc = OSError(errno.ENOSPC, "No space left on device")
    log, note = record_failure(run_path, {"status": "failed", "error": "x" * 2000}, failure.describe(exc), exc,
                               DiskReserve(run_path))
    assert note == "" and log is not None and log.stat().st_size > 0
    assert RunStore(tiny_tmpfs).run("run").read_summary()["status"] == "failed"
    # Without the reserve the same failure cannot be written, and says where it went instead.
    (run_path / "error.log").unlink()
    _fill(tiny_tmpfs / "filler2")
    log, note = record_failure(run_path, {"status": "failed", "error": "x" * 8000}, "disk full", exc, None)
    assert "stderr" in note


# -- msd runs list -----------------------------------------------------------------------------
def _store_with_runs(root: Path) -> RunStore:
    store = RunStore(root)
    rows = [("hateful_memes-student_only-0123456789ab", {"status": "completed", "dataset": "hateful_memes",
             "method": "student_only", "seed": 0, "updates": 20, "epochs_started": 2, "headline": {"val": 0.61}}),
            ("mmimdb-msd-ba9876543210", {"status": "running", "dataset": "mmimdb", "method": "msd",
             "weighting": "instance", "seed": 1, "total_updates": 40}),
            ("visual_entailment-teacher-aaaaaaaaaaaa", {"status": "failed", "dataset": "visual_entailment",
             "method": "teacher", "seed": 0})]
    for run_id, summary in rows:
        run = store.run(run_id)
        run.path.mkdir(parents=True)
        run.write_summary(summary)
    return store


def test_runs_list_keeps_full_ids_at_80_columns_and_filters(tmp_path):
    store = _store_with_runs(tmp_path)
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(runs_table(collect_rows(store), console))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for run_id in ("hateful_memes-student_only-0123456789ab", "mmimdb-msd-ba9876543210",
                   "visual_entailment-teacher-aaaaaaaaaaaa"):
        assert run_id in text
    assert "2/20" in text and "interrupted" in text  # the "running" run has no live process
    assert [r.run_id for r in collect_rows(store, method="msd-instance")] == ["mmimdb-msd-ba9876543210"]
    assert [r.run_id for r in collect_rows(store, status="interrupted")] == ["mmimdb-msd-ba9876543210"]
    assert [r.run_id for r in collect_rows(store, dataset="visual_entailment")] == [
        "visual_entailment-teacher-aaaaaaaaaaaa"]
    result = CliRunner().invoke(app, ["runs", "list", "--save-dir", str(tmp_path), "--status", "complete"])
    assert "not a run status" in str(result.exception)


def test_msd_run_on_a_full_disk_ends_failed_with_error_log_and_one_paragraph(env, tiny_tmpfs):
    args = [*RUN, *[a for a in env if not a.startswith("env.save_dir")], f"env.save_dir={tiny_tmpfs / 'runs'}"]
    result = CliRunner().invoke(app, ["run", "--no-progress", *args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    paragraph = " ".join(result.stderr.split())
    assert "full disk" in paragraph or "disk is full" in paragraph, paragraph
    (run,) = RunStore(tiny_tmpfs / "runs")
    assert run.status == "failed" and run.file("error.log").stat().st_size > 0
    assert not run.file(failure.RESERVE_FILE).exists()  # spent on the record
