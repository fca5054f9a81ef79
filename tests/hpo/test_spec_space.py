"""Search files and spaces: validation and method-conditional sampling (no training)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from benchmark.hpo.spec import SearchFileError, load_search
from benchmark.hpo.storage import default_url, journal_path, resolve_url, safe_url

REPO = Path(__file__).resolve().parents[2]
LR, ALPHA, TAU = "optimizer.params.lr", "distill.alpha", "distill.temperature"
TW = "distill.weighting_params.temperature"
META_LR, PARAM = "distill.weighting_params.meta_lr", "distill.weighting_params.parameterisation"


def _search(tmp_path: Path, **spec) -> Path:
    spec.setdefault("base", {"dataset": "hateful_memes", "method": "kd"})
    spec.setdefault("budget", {"trials": 3})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _sampled(spec, n: int = 1) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(spec.space.sample(trial, spec.fixed))
        study.tell(trial, 0.5)
    return out


@pytest.mark.parametrize(
    ("method", "weighting", "present", "absent"),
    [
        ("student_only", None, {LR}, {ALPHA, TAU, TW, META_LR, PARAM}),
        ("kd", None, {LR, ALPHA, TAU}, {TW, META_LR, PARAM}),
        ("msd", "instance", {LR, ALPHA, TAU, TW}, {META_LR, PARAM}),
        ("msd", "learned", {LR, ALPHA, TAU, META_LR, PARAM}, {TW}),
        ("msd", "uniform", {LR, ALPHA, TAU}, {TW, META_LR, PARAM}),
    ],
)
def test_default_space_is_method_conditional(tmp_path, method, weighting, present, absent):
    base = {"dataset": "hateful_memes", "method": method, **({"distill.weighting": weighting} if weighting else {})}
    spec = load_search(_search(tmp_path, base=base, space="default"))
    (values,) = _sampled(spec)
    assert set(values) == present and not set(values) & absent
    assert 1e-4 <= values[LR] <= 1e-2


def test_searched_weighting_conditions_its_parameters(tmp_path):
    spec = load_search(_search(tmp_path, base={"dataset": "hateful_memes", "method": "msd"}, space={
        "distill.weighting": ["instance", "learned"], TW: "default", META_LR: {"low": 1e-3, "high": 1e-1, "log": True},
    }))
    assert spec.space.names()[0] == "distill.weighting"  # suggested first: the others depend on it
    samples = _sampled(spec, 16)
    assert {s["distill.weighting"] for s in samples} == {"instance", "learned"}
    for s in samples:
        assert (TW in s) == (s["distill.weighting"] == "instance")
        assert (META_LR in s) == (s["distill.weighting"] == "learned")


def test_parameter_the_method_never_reads_is_refused(tmp_path):
    with pytest.raises(SearchFileError, match="only matters when method in .*weighting in \\['instance'\\]"):
        load_search(_search(tmp_path, space={TW: "default"}))


def test_unknown_key_names_the_nearest_keys(tmp_path):
    with pytest.raises(SearchFileError, match="distill.alpha"):
        load_search(_search(tmp_path, space={"distill.alpah": {"type": "float", "low": 0.1, "high": 0.9}}))
    with pytest.raises(SearchFileError, match="budget"):
        load_search(_search(tmp_path, budjet={"trials": 3}))
    with pytest.raises(SearchFileError, match="Unknown config key 'training.max_epoch'"):
        load_search(_search(tmp_path, base={"dataset": "hateful_memes", "training.max_epoch": 2}))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "float", "low": 1.0, "high": 0.5}, "low < high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "low > 0"),
        ({"type": "real", "low": 0.1, "high": 1.0}, "'type' must be one of float, int, categorical"),
        ({"type": "categorical", "choices": []}, "non-empty 'choices'"),
        ({"low": 0.1, "high": 0.9, "lgo": True}, "unknown field"),
    ],
)
def test_bad_ranges(tmp_path, entry, message):
    with pytest.raises(SearchFileError, match=message):
        load_search(_search(tmp_path, space={ALPHA: entry}))


def test_int_float_categorical_entries(tmp_path):
    spec = load_search(_search(tmp_path, space={
        "training.batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
        ALPHA: {"low": 0.2, "high": 0.8, "step": 0.1},
        "views.removal": ["drop", "zero"],
    }))
    for values in _sampled(spec, 8):
        assert values["training.batch_size"] in (16, 32, 48, 64)
        assert round(values[ALPHA] * 10) == pytest.approx(values[ALPHA] * 10)
        assert values["views.removal"] in ("drop", "zero")


def test_objective_direction_and_split(tmp_path):
    spec = load_search(_search(tmp_path))
    assert [(o.metric, o.direction) for o in spec.objectives] == [("val/hateful_memes/roc_auc", "maximize")]
    spec = load_search(_search(tmp_path, objective={"metric": "val/hateful_memes/loss/total"}))
    assert spec.objectives[0].direction == "minimize"
    spec = load_search(_search(tmp_path, base={"dataset": "mmimdb", "method": "kd"}, objective={"metric": None}))
    assert spec.objectives[0].metric == "val/mmimdb/multilabel_micro_f1"
    with pytest.raises(SearchFileError, match="test metric"):
        load_search(_search(tmp_path, objective={"metric": "test/hateful_memes/roc_auc"}))
    with pytest.raises(SearchFileError, match="cannot tell whether to maximise"):
        load_search(_search(tmp_path, objective={"metric": "val/hateful_memes/mystery"}))


def test_sampler_and_pruner_registries(tmp_path):
    with pytest.raises(SearchFileError, match="unknown sampler 'tpee'. Known: tpe"):
        load_search(_search(tmp_path, sampler="tpee"))
    with pytest.raises(SearchFileError, match="does not take 'n_startup'"):
        load_search(_search(tmp_path, pruner={"type": "median", "n_startup": 3}))
    with pytest.raises(SearchFileError, match="grid sampler needs a finite list"):
        load_search(_search(tmp_path, sampler="grid", space={ALPHA: "default"}))
    spec = load_search(_search(tmp_path, sampler="grid", space={ALPHA: {"low": 0.1, "high": 0.9, "grid": [0.1, 0.5]}}))
    assert spec.space.grid_search_space() == {ALPHA: [0.1, 0.5]}
    with pytest.raises(SearchFileError, match="cannot prune multi-objective"):
        load_search(_search(tmp_path, objective=[{"metric": None}, {"metric": "train_time_s"}], pruner="median"))
    multi = load_search(_search(tmp_path, objective=[{"metric": None}, {"metric": "train_time_s"}], sampler="nsga2"))
    assert multi.directions == ["maximize", "minimize"] and multi.pruner.name == "none"


def test_repository_search_files_load():
    files = sorted((REPO / "experiments" / "hpo").glob("[!_]*.yaml"))
    names = {f.stem for f in files}
    assert {"msd_hateful_memes", "kd_hateful_memes", "msd_learned_hateful_memes", "msd_mmimdb",
            "msd_visual_entailment", "msd_vqa2"} <= names
    for path in files:
        spec = load_search(path)
        smoke = load_search(path, "smoke")
        assert spec.budget.trials == 20 and spec.sampler.name == "tpe" and spec.pruner.name == "median"
        assert smoke.data.size == 64 and smoke.name.endswith("-smoke")
        if spec.fixed["method"] == "msd" and spec.fixed["distill.weighting"] == "instance":
            assert TW in spec.space.names()


def test_storage_urls(monkeypatch, tmp_path):
    monkeypatch.setenv("MSD_HPO_DIR", str(tmp_path / "h"))
    assert default_url("s1") == f"sqlite:///{tmp_path / 'h' / 's1.db'}"
    assert resolve_url("s1") == default_url("s1")
    assert resolve_url("s1", "x/{study}.db") == "sqlite:///x/s1.db"
    assert resolve_url("s1", None, "runs/{study}.log") == "journal:runs/s1.log"
    assert journal_path("journal:///abs/j.log") == Path("/abs/j.log")
    assert safe_url("postgresql+psycopg2://me:secret@host:5432/db") == "postgresql+psycopg2://me:***@host:5432/db"
    with pytest.raises(SearchFileError.__mro__[1], match="Study name"):
        default_url("bad name")
