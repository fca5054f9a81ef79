"""Validate first: every config-only mistake fails before a run directory, lock or W&B run exists.

The run store's teachers are written by hand here (config.yaml, summary.json, an empty
checkpoint.pt): validation reads nothing else, so no test has to train one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from benchmark.config.loader import DEFAULTS_FILE, build_config, flatten_dotted, parse_value
from benchmark.config.validate import (
    CHECKED_BY_NAME,
    CHECKS,
    FREE_KEYS,
    LAZY_RULES,
    REGISTRY_CHOICES,
    RULED_SECTIONS,
    VALUE_RULES,
    ConfigValidationError,
    ValidationContext,
    validate_config,
)
from benchmark.tracking.run_store import RunDir


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A run store of hand-written runs, shared (read-only) by the tests of this module."""
    from benchmark.data.make import make_dataset

    root = tmp_path_factory.mktemp("store")
    dirs = {"data": root / "data", "runs": root / "runs", "cache": root / "cache"}
    # Real (tiny) data: without validation first, a bad run would get as far as writing its
    # run directory and starting W&B, so "nothing written" below can fail.
    make_dataset("hateful_memes", dirs["data"], size=32, seed=0)
    _stored_run(dirs, "abc111", "method=teacher")
    _stored_run(dirs, "abc222", "method=teacher", "training.seed=1")
    _stored_run(dirs, "student0", "method=kd", "teacher=abc111")
    _stored_run(dirs, "mm0", "dataset=mmimdb", "method=teacher")
    _stored_run(dirs, "running0", "method=teacher", status="running")
    _stored_run(dirs, "old0", "method=teacher", size="paper_base")
    _stored_run(dirs, "zero0", "method=teacher", "views.removal=zero")
    _stored_run(dirs, "viewtrained0", "method=teacher", "views.teacher_loss=1.0")
    bare = _stored_run(dirs, "bare0", "method=teacher")
    bare.file("checkpoint.pt").unlink()
    return dirs["runs"]


@pytest.fixture
def dirs(tmp_path, store) -> dict[str, Path]:
    """The shared store and data; cache and W&B folders that nothing may create."""
    return {"data": store.parent / "data", "runs": store, "cache": store.parent / "cache", "wandb": tmp_path / "wandb"}


def _args(dirs: dict[str, Path], *extra: str) -> list[str]:
    return [f"env.data_dir={dirs['data']}", f"env.save_dir={dirs['runs']}", f"env.cache_dir={dirs['cache']}",
            "training.device=cpu", *extra]


_BASE: dict[tuple[str, ...], DictConfig] = {}


def _config(dirs: dict[str, Path], *extra: str) -> DictConfig:
    """The test directories' default config with ``extra`` applied as the loader applies them
    (the merged defaults are built once: building them costs ~0.1 s a test)."""
    key = tuple(_args(dirs))
    if key not in _BASE:
        _BASE[key] = build_config(list(key))
    config = _BASE[key].copy()
    for arg in extra:
        name, _, raw = arg.partition("=")
        OmegaConf.update(config, name.lstrip("+"), parse_value(raw), merge=True, force_add=True)
    return config


def _problem(dirs: dict[str, Path], *extra: str) -> str:
    with pytest.raises(ConfigValidationError) as info:
        validate_config(_config(dirs, *extra))
    return str(info.value)


def _stored_run(dirs: dict[str, Path], run_id: str, *args: str, status: str = "completed",
                size: str | None = None) -> RunDir:
    """A finished run in the store, as validation sees it (no training)."""
    from benchmark.models.build import model_config

    config = build_config(_args(dirs, *args))
    run = RunDir(dirs["runs"] / run_id)
    run.write_config(config)
    built = model_config(config)
    run.write_summary({"status": status, "dataset": str(config.dataset), "method": str(config.method),
                       "model_description": {"name": built.name, "size": size or built.size}})
    run.file("checkpoint.pt").write_bytes(b"")
    return run


# -- values and choices -------------------------------------------------------------------------------
def test_the_default_config_is_valid(dirs):
    validate_config(_config(dirs))


@pytest.mark.parametrize(("extra", "expected"), [
    (["optimizer.params.lr=-1"], "optimizer.params.lr (the learning rate) must be a number > 0, got -1"),
    (["optimizer.params.lr=abc"], "optimizer.params.lr (the learning rate) must be a number > 0, got 'abc' (str)"),
    (["training.max_epochs=0"], "training.max_epochs (epochs to train) must be an integer >= 1 (or null), got 0"),
    (["training.batch_size=0"], "training.batch_size (the global batch) must be an integer >= 1"),
    (["training.update_frequency=0"], "training.update_frequency"),
    (["training.early_stop.patience=-1"], "training.early_stop.patience"),
    (["distill.alpha=1.5"], "distill.alpha (the weight of the KD term) must be a number in [0, 1], got 1.5"),
    (["distill.temperature=0"], "distill.temperature (the distillation temperature tau) must be a number > 0"),
    (["views.teacher_loss=-0.5"], "views.teacher_loss (the weight of the teacher's single-modality label losses) "
                                  "must be a number >= 0, got -0.5"),
    (["data.meta_split.fraction=1.0"], "data.meta_split.fraction (the held-out share of train) must be a number in [0, 1)"),
    (["training.fp16=yes"], "training.fp16 must be true or false, got 'yes'"),
    (["checkpoint.rule=bset"], "checkpoint.rule: 'bset' is not a valid value. Did you mean 'best'?"),
    (["data.meta_split.hold_out=al"], "data.meta_split.hold_out: 'al' is not a valid value. Did you mean 'all'?"),
    (["training.max_epochs=null"], "training.max_epochs and training.max_updates are both null"),
])
def test_bad_values_name_the_key_the_rule_and_the_value(dirs, extra, expected):
    assert expected in _problem(dirs, *extra)


@pytest.mark.parametrize(("extra", "expected"), [
    (["method=msd", "distill.weighting=instanse"], "weighting: 'instanse' is not a valid value. Did you mean 'instance'?"),
    (["method=kdd"], "method: 'kdd' is not a valid value. Did you mean 'kd'?"),
    (["distill.saliency=divergense"], "distill.saliency: 'divergense' is not a valid value. Did you mean 'divergence'?"),
    (["optimizer.type=adamw"], "optimizer.type: 'adamw' is not a valid value. Did you mean 'adam_w'?"),
    (["scheduler.type=constnt"], "scheduler.type: 'constnt' is not a valid value. Did you mean 'constant'?"),
    (["views.removal=zer"], "'zer' is not a valid value. Did you mean 'zero'?"),
    (["evaluation.views=['multi','imag']"], "evaluation.views: 'imag' is not a valid value. Did you mean 'image'?"),
    (["evaluation.views=[multi,image]"], "evaluation.views must be a list of views"),
    (["evaluation.splits=['val','tset']"], "evaluation.splits names 'tset'"),
    (["run_type=trian"], "run_type='trian' is not a run type"),
    (["training.amp_dtype=bfloat61", "training.fp16=true"], "training.amp_dtype: 'bfloat61' is not a valid value. "
                                                            "Did you mean 'bfloat16'"),
    (["training.distributed=of"], "training.distributed: 'of' is not a valid value. Did you mean 'off'?"),
])
def test_unknown_choices_get_did_you_mean_hints(dirs, extra, expected):
    assert expected in _problem(dirs, *extra)


@pytest.mark.parametrize("extra", [["training.pin_memory=true"], ["training.pin_memory=auto"],
                                   ["training.max_epochs=null", "training.max_updates=10"],
                                   ["training.clip_grad_norm=null"], ["training.max_epochs=2.0"]])
def test_values_the_trainer_accepts_pass(dirs, extra):
    validate_config(_config(dirs, *extra))


def test_every_problem_is_reported_at_once_one_paragraph_each(dirs):
    message = _problem(dirs, "optimizer.params.lr=-1", "training.max_epochs=0", "method=kdd")
    assert message.startswith("3 problems in the config:")
    assert [line[:2] for line in message.splitlines()[1:]] == ["- "] * 3


def test_a_check_after_a_failed_one_is_not_run(dirs):
    """An unknown method has no teacher rule: one paragraph about the method, not two."""
    message = _problem(dirs, "method=kdd")
    assert "teacher=" not in message and "problems" not in message


def test_the_trainers_own_rules_are_called_not_copied(dirs, monkeypatch):
    """Device, precision and distributed refusals come from the trainer's functions."""
    assert "needs a CUDA GPU" in _problem(dirs, "training.fp16=true", "training.amp_dtype=float16")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "training.distributed=off" in _problem(dirs, "training.distributed=off")
    message = _problem(dirs, "method=msd", "distill.weighting=learned", "teacher=abc111")
    from benchmark.registry import registry

    refusal = registry.get_method("msd").distributed_refusal(_config(dirs, "method=msd", "distill.weighting=learned"))
    assert refusal and refusal in message
    assert "A world of 2 ranks is larger than the data of one update" in _problem(dirs, "training.batch_size=1")


def test_a_missing_resume_file_is_named(dirs):
    assert "checkpoint.resume_file=" in _problem(dirs, f"checkpoint.resume_file={dirs['runs']}/nope.pt")


# -- the table follows defaults.yaml -----------------------------------------------------------------
def test_every_key_of_the_ruled_sections_of_defaults_yaml_has_a_rule():
    defaults = OmegaConf.to_container(OmegaConf.load(DEFAULTS_FILE), resolve=False)
    leaves = [k for k in flatten_dotted(defaults) if k.split(".")[0] in (*RULED_SECTIONS, *REGISTRY_CHOICES)
              or k in REGISTRY_CHOICES or "." not in k]
    covered = ({r.key for r in VALUE_RULES} | {make().key for make in LAZY_RULES} | set(REGISTRY_CHOICES)
               | set(CHECKED_BY_NAME) | set(FREE_KEYS))
    top_level_free = {"model_config", "dataset_config"}
    missing = [k for k in leaves if k not in covered and k not in top_level_free]
    assert not missing, (f"defaults.yaml keys without a validation rule: {missing}. Add each to VALUE_RULES "
                         "(benchmark/config/validate.py), or to FREE_KEYS if any value of its type is fine.")
    stale = [r.key for r in VALUE_RULES if r.key not in flatten_dotted(defaults)]
    assert not stale, f"VALUE_RULES names keys that defaults.yaml no longer has: {stale}"


def test_checks_are_a_registry_of_named_checks():
    assert {"values", "choices", "teacher", "run_type", "host"} <= set(CHECKS)
    assert all(check.doc for check in CHECKS.values())


# -- teacher resolution ------------------------------------------------------------------------------
def test_a_distilling_method_without_a_teacher_is_told_how_to_get_one(dirs):
    message = _problem(dirs, "method=kd")
    assert "method=kd distils from a teacher: pass teacher=" in message
    assert "msd run dataset=hateful_memes model=late_fusion method=teacher" in message


def test_a_teacher_that_does_not_exist_or_is_ambiguous(dirs):
    assert "teacher=zzz: No run 'zzz'" in _problem(dirs, "method=kd", "teacher=zzz")
    message = _problem(dirs, "method=kd", "teacher=abc")
    assert "teacher=abc: Run reference 'abc' is ambiguous: abc111, abc222" in message
    validate_config(_config(dirs, "method=kd", "teacher=abc1"))  # a unique prefix is fine


def test_a_student_given_as_teacher_is_not_a_teacher(dirs):
    message = _problem(dirs, "method=msd", "distill.weighting=instance", "teacher=student0")
    assert "teacher=student0 is not a teacher: that run was trained with method=kd (a student)" in message
    assert "missing" not in message  # not the checkpoint shape mismatch of old


def test_a_teacher_of_another_dataset_is_refused(dirs):
    message = _problem(dirs, "method=kd", "teacher=mm0")
    assert "teacher=mm0 was trained on 'mmimdb', but this run is on 'hateful_memes'" in message


def test_a_teacher_with_another_view_removal_rule_is_refused(dirs):
    message = _problem(dirs, "method=msd", "distill.weighting=instance", "teacher=zero0")
    assert ("teacher=zero0: views.removal=drop for this student, but its teacher was trained with "
            "views.removal=zero") in message


def test_a_student_states_its_teachers_view_loss_weight(dirs):
    message = _problem(dirs, "method=msd", "distill.weighting=instance", "teacher=viewtrained0")
    assert ("teacher=viewtrained0: views.teacher_loss=0 for this student, but its teacher was trained with "
            "views.teacher_loss=1: ") in message and "Set views.teacher_loss=1." in message
    validate_config(_config(dirs, "method=msd", "distill.weighting=instance", "teacher=viewtrained0",
                            "views.teacher_loss=1.0"))
    assert "views.teacher_loss=1 for this student, but its teacher was trained with views.teacher_loss=0" in (
        _problem(dirs, "method=kd", "teacher=abc111", "views.teacher_loss=1"))


def test_a_teacher_stored_before_the_view_loss_existed_counts_as_weight_zero():
    from benchmark.distill.teacher import views_mismatch

    student = OmegaConf.create({"views": {"removal": "drop", "teacher_loss": 0.0}})
    assert views_mismatch(student, OmegaConf.create({"views": {"removal": "drop"}})) is None
    assert views_mismatch(student, OmegaConf.create({})) is None


def test_an_incomplete_teacher_or_one_without_checkpoint_is_refused(dirs):
    assert "is not complete (status: running)" in _problem(dirs, "method=kd", "teacher=running0")
    assert "has no checkpoint.pt" in _problem(dirs, "method=kd", "teacher=bare0")


def test_a_teacher_whose_checkpoint_its_config_cannot_rebuild_is_refused(dirs):
    message = _problem(dirs, "method=kd", "teacher=old0")
    assert "its checkpoint holds a late_fusion of size paper_base" in message


def test_a_teacher_by_run_directory_is_found(dirs):
    validate_config(_config(dirs, "method=kd", f"teacher={dirs['runs'] / 'abc222'}"))


def test_a_teacher_planned_by_a_grid_is_checked_against_its_config(dirs):
    teacher_config = _config(dirs, "method=teacher")
    context = ValidationContext(planned_teachers={"planned0": teacher_config})
    validate_config(_config(dirs, "method=kd", "teacher=planned0"), context=context)
    student_config = _config(dirs, "method=kd", "teacher=x")
    with pytest.raises(ConfigValidationError, match="is not a teacher"):
        validate_config(_config(dirs, "method=kd", "teacher=planned1"),
                        context=ValidationContext(planned_teachers={"planned1": student_config}))


def test_scoring_a_trained_student_needs_no_teacher(dirs):
    validate_config(_config(dirs, "method=kd", "run_type=val"), skip=("resume_file",))


# -- nothing is written, and quickly ------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "expected"), [
    (["method=msd", "distill.weighting=instanse"], "Did you mean 'instance'?"),
    (["method=kdd"], "Did you mean 'kd'?"),
    (["method=kd"], "distils from a teacher"),
    (["method=kd", "teacher=abc"], "is ambiguous"),
    (["method=kd", "teacher=student0"], "is not a teacher"),
    (["method=kd", "teacher=mm0"], "was trained on 'mmimdb'"),
    (["optimizer.params.lr=-1"], "optimizer.params.lr"),
    (["optimizer.params.lr=abc"], "optimizer.params.lr"),
    (["training.max_epochs=0"], "training.max_epochs"),
])
def test_msd_run_fails_in_one_paragraph_and_writes_nothing(dirs, monkeypatch, capsys, extra, expected):
    from benchmark import cli

    before = sorted(p for p in dirs["runs"].parent.rglob("*"))
    args = _args(dirs, "tracking.wandb.enabled=true", "tracking.wandb.mode=offline",
                 f"tracking.wandb.dir={dirs['wandb']}", *extra)
    monkeypatch.delenv("MSD_DEBUG", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", ["msd", "run", "--no-progress", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and expected in " ".join(err.split())
    assert "Traceback" not in err
    after = sorted(p for p in dirs["runs"].parent.rglob("*"))
    assert after == before, "files appeared in the run store, data or cache (a run directory, a lock)"
    from benchmark.grid.locks import LOCK_DIR

    assert not (dirs["runs"] / LOCK_DIR).exists(), "a run lock was taken"
    assert not dirs["wandb"].exists(), "a W&B run was started"


def test_validation_of_a_run_is_quick_in_a_warm_process(dirs):
    """Generous bound (the brief's 3 s): docs/architecture.md §3.4 reports the measured time."""
    config = _config(dirs, "method=msd", "distill.weighting=instance", "teacher=abc111")
    validate_config(config)  # imports the registry's modules once
    started = time.perf_counter()
    validate_config(config)
    assert time.perf_counter() - started < 3.0


def test_msd_cache_build_refuses_a_student_named_as_teacher(dirs, monkeypatch, capsys):
    from benchmark import cli

    monkeypatch.delenv("MSD_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["msd", "cache", "build", *_args(dirs, "teacher=student0")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "teacher=student0 is not a teacher: that run was trained with method=kd (a student)" in err
    assert not dirs["cache"].exists()


def test_a_search_validates_its_configs_before_its_teacher_trains(dirs):
    """HPO: the student base (no teacher yet) is checked without the teacher rule; with one, fully."""
    from types import SimpleNamespace

    from benchmark.errors import UserError
    from benchmark.hpo.prepare import _build

    spec = SimpleNamespace(path=Path("search.yaml"))
    _build(_args(dirs, "method=kd"), spec)  # the teacher does not exist yet: not an error here
    with pytest.raises(UserError, match=r"Search file search.yaml: .*optimizer.params.lr \(the learning rate\)"):
        _build(_args(dirs, "method=kd", "optimizer.params.lr=-1"), spec)
    with pytest.raises(UserError, match="teacher=student0 is not a teacher"):
        _build(_args(dirs, "method=kd", "teacher=student0"), spec)


def test_the_error_survives_pickling_whole(dirs):
    import pickle

    with pytest.raises(ConfigValidationError) as info:
        validate_config(_config(dirs, "optimizer.params.lr=-1", "training.max_epochs=0"))
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.failures == info.value.failures


def test_an_hpo_trial_with_a_bad_sampled_value_fails_before_its_lock_and_run(dirs):
    from types import SimpleNamespace

    import optuna

    from benchmark.hpo.objective import TrialObjective
    from benchmark.hpo.prepare import Prepared

    space = SimpleNamespace(sample=lambda trial, fixed: {"optimizer.params.lr": -0.001})
    spec = SimpleNamespace(space=space, fixed={}, objectives=[SimpleNamespace(metric="val/x")], multi_objective=False)
    objective = TrialObjective(spec=spec, prepared=Prepared(args=_args(dirs), teacher_run=None), study_name="s",
                               wandb=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    before = sorted(dirs["runs"].parent.rglob("*"))
    with pytest.raises(ConfigValidationError, match=r"^trial 0 \(optimizer.params.lr=-0.001\): optimizer.params.lr"):
        objective._run(trial)
    assert sorted(dirs["runs"].parent.rglob("*")) == before
