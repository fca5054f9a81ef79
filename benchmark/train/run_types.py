"""MMF's ``run_type``: which of training and scoring a command does.

``train`` trains; ``val`` and ``test`` name the splits scored at the end (after training, or,
without ``train``, of an existing checkpoint); ``predict`` scores ``evaluation.splits`` of an
existing checkpoint and writes its predictions. MMF spells combinations with underscores
(``train_val``, ``train_val_test``); so does the suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from benchmark.errors import ConfigError

RUN_TYPE_PARTS = ("train", "val", "test", "predict")


@dataclass(frozen=True)
class RunType:
    train: bool
    splits: tuple[str, ...]  # scored at the end, in evaluation.splits order
    predict: bool


def parse_run_type(config: DictConfig) -> RunType:
    text = str(config.get("run_type") or "train_val_test")
    parts = text.split("_")
    unknown = [p for p in parts if p not in RUN_TYPE_PARTS]
    if unknown or len(set(parts)) != len(parts) or ("predict" in parts and len(parts) > 1):
        raise ConfigError(
            f"run_type={text!r} is not a run type. Use train, train_val, train_test, train_val_test, "
            "val, test, val_test or predict (MMF's names)."
        )
    predict = parts == ["predict"]
    wanted = set(config.evaluation.splits) if predict else set(parts)
    splits = tuple(s for s in config.evaluation.splits if s in wanted)  # e.g. HPO scores val only
    if "train" not in parts and not splits:
        raise ConfigError(
            f"run_type={text} scores no split: none of its splits is in evaluation.splits="
            f"{list(config.evaluation.splits)}."
        )
    return RunType("train" in parts, splits, predict)


def score_without_training(config: DictConfig, run_id: str, run_type: RunType) -> dict:
    """``run_type=val|test|predict``: score the run's own checkpoint, or ``checkpoint.resume_file``,
    through the same code as ``msd eval``; the run's own files are never touched."""
    from benchmark.tracking.run_store import RunStore
    from benchmark.train.distributed import launcher_world
    from benchmark.train.rescore import eval_name, publish_eval, rescore, score_checkpoint

    if launcher_world()[1] > 1:
        raise ConfigError(
            f"run_type={config.run_type} scores a checkpoint in one process (it is fast, and several "
            "processes would write the same files): run it without torchrun."
        )
    views = list(config.evaluation.views)
    resume_file = config.checkpoint.get("resume_file")
    run = RunStore(config.env.save_dir).run(run_id)
    if not run.path.exists() and resume_file is None:
        raise ConfigError(
            f"run_type={config.run_type} scores a trained checkpoint, and run {run_id} (this config) has not "
            f"been trained under {config.env.save_dir}. Train it first (run_type=train_val_test), or name a "
            "checkpoint with checkpoint.resume_file=<path>."
        )
    if run.path.exists():
        result = rescore(str(run.path), save_dir=config.env.save_dir, splits=list(run_type.splits), views=views,
                         checkpoint=resume_file)
        return {"metrics": result.metrics, "written_to": str(result.path)}
    checkpoint = Path(str(resume_file)).expanduser().resolve()
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint.resume_file={resume_file}: no such file.")
    scored = score_checkpoint(config, checkpoint, list(run_type.splits), views)
    name = eval_name(list(run_type.splits), views, [], checkpoint)
    target = checkpoint.parent / "eval" / name
    record = {"run_id": run_id, "checkpoint": str(checkpoint), "checkpoint_step": scored.checkpoint_step,
              "splits": list(run_type.splits), "views": views, "metrics": scored.metrics}
    publish_eval(target, record, scored.predictions)
    return {"metrics": scored.metrics, "written_to": str(target)}
