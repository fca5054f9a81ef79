"""Training at scale on the CPU: DDP with the gloo backend (two real processes under torchrun),
gradient accumulation, bf16 autocast, and the clear errors of each.

Tolerances: DDP averages gradients that each rank summed in another order, and AdamW divides
by sqrt(v), which turns ~1e-7 float32 differences of tiny gradients into parameter differences
of ~1e-5 after a few updates; 1e-4 is far below the size of a real update (lr 1e-3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import multiprocessing as mp

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.errors import ConfigError
from benchmark.registry import registry
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunStore
from benchmark.train.distributed import DistContext, init_distributed, main_first
from benchmark.train.trainer import Trainer, _Update, run_experiment

NO_DROPOUT = [f"model_config.late_fusion.{part}.dropout=0.0" for part in ("text_encoder", "image_encoder", "fusion", "head")]
PARAM_TOL = 1e-4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scale-data")
    make_dataset("hateful_memes", root, size=105, seed=0)  # 27 val and test samples: uneven DDP shards
    return root


def _args(data_dir: Path, save: Path, *extra: str) -> list[str]:
    return [
        "dataset=hateful_memes", f"env.data_dir={data_dir}", f"env.save_dir={save}", f"env.cache_dir={save.parent / 'cache'}",
        "tracking.wandb.mode=disabled", "training.threads=1", "checkpoint.rule=last", *NO_DROPOUT, *extra,
    ]


def _torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "benchmark.cli", "run", "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def _weights(save: Path) -> dict[str, torch.Tensor]:
    (run,) = list(RunStore(save))
    return torch.load(run.file("checkpoint.pt"), weights_only=False)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_gloo_processes_train_like_one_with_the_same_global_batch(data_dir, tmp_path):
    extra = ["method=teacher", "training.max_updates=4", "training.batch_size=16", "training.evaluation_interval=2"]
    ddp = _torchrun(_args(data_dir, tmp_path / "ddp", *extra))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count(": completed") == 1  # rank 0 reports, once
    single = run_experiment(build_config(_args(data_dir, tmp_path / "one", *extra)), progress=False)
    assert _max_diff(_weights(tmp_path / "ddp"), _weights(tmp_path / "one")) < PARAM_TOL

    (run,) = list(RunStore(tmp_path / "ddp"))
    summary = run.read_summary()
    assert summary["world_size"] == 2 and summary["updates"] == 4
    for key, value in single.summary["metrics"].items():
        assert summary["metrics"][key] == pytest.approx(value, abs=1e-4), key
    # Gathered evaluation: every sample of each (odd-sized) split exactly once, in file order.
    predictions = run.read_predictions()
    ours = single.run_dir.read_predictions()
    for (split, view), frame in predictions.groupby(["split", "view"]):
        expected = ours[(ours.split == split) & (ours.view == view)]
        assert list(frame.sample_index) == list(expected.sample_index)
        assert frame.sample_index.is_unique and len(frame) % 2 == 1
    # Only rank 0 wrote: one row per logged update, not two.
    rows = pd.DataFrame(run.read_metrics())
    assert not rows[rows.type == "train"].duplicated("trainer/global_step").any()


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_an_interrupted_run_resumes_under_ddp_and_ends_like_an_uninterrupted_one(data_dir, tmp_path,
                                                                                 interrupt_after_update):
    extra = ["method=teacher", "training.max_updates=6", "training.batch_size=16", "training.evaluation_interval=2"]
    config = build_config(_args(data_dir, tmp_path / "ddp", *extra, "training.log_interval=1"))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=False, callbacks=(interrupt_after_update(3),))
    (run,) = list(RunStore(tmp_path / "ddp"))
    assert run.status == "interrupted" and run.file("last.pt").exists()
    resumed = _torchrun(_args(data_dir, tmp_path / "ddp", *extra, "training.log_interval=1"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run.read_summary()["resumed_from_step"] == 2
    run_experiment(build_config(_args(data_dir, tmp_path / "one", *extra, "training.log_interval=1")), progress=False)
    assert _max_diff(_weights(tmp_path / "ddp"), _weights(tmp_path / "one")) < PARAM_TOL


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_a_world_larger_than_a_batch_fails_before_anything_is_written(data_dir, tmp_path):
    result = _torchrun(_args(data_dir, tmp_path / "runs", "method=teacher", "training.batch_size=1"))
    assert result.returncode != 0
    assert "error: A world of 2 ranks is larger than the data" in " ".join(result.stderr.split())
    assert "benchmark/train/trainer.py" not in result.stderr  # one paragraph, not our traceback (torchrun adds its own)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _setup_trainer(data_dir: Path, save: Path, *extra: str) -> Trainer:
    config = build_config(_args(data_dir, save, "method=teacher", *extra))
    trainer = Trainer(config, RunStore(save).run(compute_run_id(config)), progress=False)
    trainer.setup()
    return trainer


def test_accumulating_k_batches_of_b_equals_one_batch_of_k_times_b(data_dir, tmp_path):
    big = _setup_trainer(data_dir, tmp_path / "a", "training.batch_size=32")
    small = _setup_trainer(data_dir, tmp_path / "b", "training.batch_size=8", "training.update_frequency=4")
    assert _max_diff(big.model.state_dict(), small.model.state_dict()) == 0.0  # same initial weights
    (batch,) = [b for _, b in zip(range(1), big.train_loader)]
    micro = [b for _, b in zip(range(4), small.train_loader)]
    assert torch.equal(torch.cat([m["sample_index"] for m in micro]), batch["sample_index"])

    update = _Update([8, 8, 8, 8], 4, 0, 4, 32)
    for m in micro:
        small._micro_step(m, update)
    big_update = _Update([32], 1, 0, 1, 32)
    big._micro_step(batch, big_update)
    assert update.mean_terms()["loss/total"] == pytest.approx(big_update.mean_terms()["loss/total"], rel=1e-6)
    for (name, p), q in zip(big.model.named_parameters(), small.model.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_accumulation_counts_updates_not_batches(data_dir, tmp_path):
    trainer = _setup_trainer(data_dir, tmp_path / "a", "training.batch_size=8", "training.update_frequency=3",
                             "training.max_epochs=2")
    batches = trainer.batches_per_epoch
    assert trainer.updates_per_epoch == -(-batches // 3)
    assert trainer.total_updates == 2 * trainer.updates_per_epoch
    with pytest.raises(ConfigError, match="update_frequency"):
        _setup_trainer(data_dir, tmp_path / "b", "training.update_frequency=0")


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_bf16_autocast_trains_on_cpu_and_tracks_fp32(data_dir, tmp_path):
    trainer = _setup_trainer(data_dir, tmp_path / "probe", "training.fp16=true", "training.amp_dtype=bfloat16")
    seen: list[torch.dtype] = []
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    trainer.train_step(next(iter(trainer.train_loader)))
    assert seen and all(d == torch.bfloat16 for d in seen)

    losses = {}
    for name, extra in (("fp32", []), ("bf16", ["training.fp16=true", "training.amp_dtype=bfloat16"])):
        result = run_experiment(build_config(_args(data_dir, tmp_path / name, "method=teacher", "training.max_updates=8",
                                                   "training.batch_size=16", "training.log_interval=1", *extra)),
                                progress=False)
        assert result.summary["precision"] == ("bfloat16" if extra else "fp32")
        losses[name] = [r["loss/total"] for r in result.run_dir.read_metrics() if r["type"] == "train"]
    assert len(losses["fp32"]) == len(losses["bf16"]) == 8
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert abs(a - b) <= 0.03 * abs(a), (losses["fp32"], losses["bf16"])  # bf16 keeps ~3 significant digits
    assert losses["bf16"] != losses["fp32"]  # autocast really changed the arithmetic


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["training.fp16=true"], "needs a CUDA GPU"),  # float16 is MMF's default amp dtype
        (["training.fp16=true", "training.amp_dtype=int8"], "amp_dtype"),
        (["training.device=cuda"], "no CUDA GPU"),
        (["training.distributed=sometimes"], "training.distributed"),
    ],
)
def test_bad_device_and_precision_fail_before_the_run_exists(data_dir, tmp_path, extra, message):
    if "cuda" in " ".join(extra) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = build_config(_args(data_dir, tmp_path / "runs", "method=teacher", *extra))
    with pytest.raises(ConfigError, match=message):
        run_experiment(config, progress=False)
    assert not (tmp_path / "runs").exists()


def test_distributed_off_under_a_launcher_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="every rank would train the same run"):
        init_distributed("off", torch.device("cpu"))


def test_meta_learned_weighting_refuses_ddp_with_its_reason():
    config = build_config(["method=msd", "weighting=learned"])
    assert "second-order" in registry.get_method("msd").distributed_refusal(config)
    assert registry.get_method("msd").distributed_refusal(build_config(["method=msd", "weighting=instance"])) is None
    assert registry.get_method("kd").distributed_refusal(config) is None


def _build_once(rank: int, world: int, init_file: str, marker: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ctx = DistContext(rank, world)
    with main_first(ctx):
        path = Path(marker)
        if not path.exists():  # what get_teacher_cache does: build when absent, else open
            path.write_text(str(rank))
        seen = path.read_text()
    assert seen == "0"
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_main_first_builds_once_on_rank_zero_and_the_others_reuse_it(tmp_path):
    marker = tmp_path / "built-by"
    mp.spawn(_build_once, args=(3, str(tmp_path / "init"), str(marker)), nprocs=3, join=True)
    assert marker.read_text() == "0"
