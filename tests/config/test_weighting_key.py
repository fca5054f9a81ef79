"""`distill.weighting` is the home of the MSD weighting scheme; the old top-level `weighting`
is an alias that warns, and moving the key renamed no run.

The run id hashes ``hashable_config``. The pinned digests below were computed with the code
from *before* the move (top-level ``weighting``) on fixed config trees, so they hold whatever
else later changes in the defaults; the tests that build full configs compare the old and the
new spelling, and the old stored layout, with each other on today's defaults.
"""

import copy
import hashlib
import json
import warnings

import pytest
import yaml
from omegaconf import OmegaConf

from benchmark.config.loader import MovedKeyWarning, build_config, load_config, move_keys, weighting_of
from benchmark.config.validate import ConfigValidationError, validate_config
from benchmark.errors import ConfigError
from benchmark.grid.cells import expand
from benchmark.grid.spec import load_grid
from benchmark.hpo.spec import SearchFileError, load_search
from benchmark.tracking.run_id import compute_run_id, hashable_config

FROZEN = {"dataset": "hateful_memes", "model": "late_fusion", "method": "msd", "teacher": "t0",
          "training": {"seed": 0, "threads": 1, "fp16": False}, "env": {"data_dir": "/somewhere"},
          "distill": {"alpha": 0.5, "temperature": 1.0, "weighting_params": {"temperature": 1.0, "meta_lr": 0.01}},
          "model_config": {"late_fusion": {"hidden": 32}, "mmbt": {"hidden": 64}},
          "dataset_config": {"hateful_memes": {"data_dir": "/d", "max_seq_length": 32}}}
# (weighting, method) -> sha256[:16] of hashable_config, computed before the move.
PINNED = {("instance", "msd"): "fd0e0a6bad9f7082", ("learned", "msd"): "f60d5ac681d91b84",
          ("none", "kd"): "bb73a9ee5cb8821f", ("none", "teacher"): "da1b4caf57299045"}
CLI = [
    ["dataset=hateful_memes", "method=msd", "weighting=instance", "teacher=t0"],
    ["dataset=mmimdb", "method=msd", "weighting=learned", "distill.weighting_params.meta_lr=0.05", "teacher=t1"],
    ["dataset=vqa2", "method=msd", "weighting=population", "teacher=t2", "training.seed=2"],
]
GRID = """
name: pin
base: {model: late_fusion}
axes:
  dataset: [hateful_memes, mmimdb]
  method:
    values: [teacher, kd, msd]
    expand: {msd: {WEIGHTING: [uniform, instance, learned]}}
  seed: [0]
include:
  - {dataset: vqa2, method: msd, WEIGHTING: population, distill.temperature: [2.0]}
"""
# The cell names the grid had before the move (they name run directories in grid status).
GRID_CELLS = {
    "hateful_memes/teacher/seed0", "mmimdb/teacher/seed0", "vqa2/teacher/seed0", "hateful_memes/kd/seed0",
    "hateful_memes/msd-uniform/seed0", "hateful_memes/msd-instance/seed0", "hateful_memes/msd-learned/seed0",
    "mmimdb/kd/seed0", "mmimdb/msd-uniform/seed0", "mmimdb/msd-instance/seed0", "mmimdb/msd-learned/seed0",
    "vqa2/msd-population-temperature2/seed0",
}


@pytest.fixture(autouse=True)
def _empty_data(tmp_path, monkeypatch):
    """The run id includes the data's fingerprint: the same (no data) on every machine."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("MSD_DATA_DIR", str(empty))


def _digest(config) -> str:
    return hashlib.sha256(json.dumps(hashable_config(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _old_layout(config):
    """The config as a run stored it before the move: ``weighting`` at the top level."""
    tree = OmegaConf.to_container(config)
    tree["weighting"] = tree["distill"].pop("weighting")
    return OmegaConf.create(tree)


@pytest.mark.parametrize("weighting,method", list(PINNED))
def test_the_new_layout_hashes_as_the_old_one_did(weighting, method):
    old = copy.deepcopy(FROZEN) | {"method": method, "weighting": weighting}
    new = copy.deepcopy(FROZEN) | {"method": method}
    new["distill"]["weighting"] = weighting
    assert _digest(OmegaConf.create(old)) == _digest(OmegaConf.create(new)) == PINNED[(weighting, method)]


@pytest.mark.parametrize("args", CLI, ids=lambda a: a[0])
def test_run_ids_do_not_depend_on_the_spelling_or_the_stored_layout(args):
    with pytest.warns(MovedKeyWarning):
        old = build_config(args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MovedKeyWarning)  # the new spelling never warns
        new = build_config([a.replace("weighting=", "distill.weighting=", 1) if a.startswith("weighting=") else a
                            for a in args])
    assert compute_run_id(old) == compute_run_id(new) == compute_run_id(_old_layout(new))
    assert hashable_config(new)["weighting"] == new.distill.weighting  # hashed at its old place


def test_alias_warns_once_and_resolves_the_same():
    with pytest.warns(MovedKeyWarning, match="'weighting' is deprecated; write 'distill.weighting'") as record:
        old = load_config(["method=msd", "weighting=learned"])
    assert len([w for w in record if issubclass(w.category, MovedKeyWarning)]) == 1
    assert old.distill.weighting == "learned" and "weighting" not in old
    assert weighting_of(old) == "learned"


def test_both_spellings_with_different_values_is_an_error_naming_both():
    with pytest.raises(ConfigError, match="distill.weighting='instance' and its deprecated spelling weighting='uniform'"):
        load_config(["method=msd", "distill.weighting=instance", "weighting=uniform"])
    with pytest.warns(MovedKeyWarning):  # the same value twice is accepted
        assert load_config(["distill.weighting=instance", "weighting=instance"]).distill.weighting == "instance"


def test_yaml_files_old_key_moves_and_conflicts_fail(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("method: msd\nweighting: population\n")
    with pytest.warns(MovedKeyWarning, match=f"Config file {old}"):
        assert load_config([f"config={old}"]).distill.weighting == "population"
    both = tmp_path / "both.yaml"
    both.write_text("weighting: population\ndistill: {weighting: instance}\n")
    with pytest.raises(ConfigError, match=f"Config file {both}: both distill.weighting='instance'"):
        load_config([f"config={both}"])


def test_validation_names_the_new_key():
    config = build_config(["method=msd", "distill.weighting=instanse"])
    with pytest.raises(ConfigValidationError) as info:
        validate_config(config, skip=("teacher",))
    assert any("distill.weighting" in f and "instanse" in f and "instance" in f for f in info.value.failures)


def test_grid_accepts_both_spellings_with_the_same_cells_and_run_ids(tmp_path):
    ids = {}
    for spelling in ("weighting", "distill.weighting"):
        path = tmp_path / f"{spelling}.yaml"
        path.write_text(GRID.replace("WEIGHTING", spelling))
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            cells = expand(load_grid(path)).cells
        moved = [str(w.message) for w in record if issubclass(w.category, MovedKeyWarning)]
        assert len(moved) == (1 if spelling == "weighting" else 0)
        if moved:
            assert "axes.method.expand.msd.weighting" in moved[0] and "include[0].weighting" in moved[0]
        ids[spelling] = {c.name: c.run_id for c in cells}
        assert all(compute_run_id(_old_layout(c.config)) == c.run_id for c in cells if c.role == "student")
    assert set(ids["weighting"]) == GRID_CELLS
    assert ids["weighting"] == ids["distill.weighting"]


def test_grid_with_both_spellings_differing_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GRID.replace("WEIGHTING", "weighting").replace(
        "method: msd, weighting: population", "method: msd, weighting: population, distill.weighting: instance"))
    with pytest.raises(ConfigError, match="both distill.weighting='instance' and its deprecated spelling weighting='population'"):
        load_grid(path)


def _search_file(tmp_path, base_key: str, space_key: str | None = None):
    space = {"distill.weighting_params.temperature": "default"}
    if space_key:
        space = {space_key: ["instance", "learned"], "distill.weighting_params.temperature": "default",
                 "distill.weighting_params.meta_lr": "default"}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {"dataset": "hateful_memes", "method": "msd", base_key: "instance"},
                                    "space": space, "budget": {"trials": 2}}))
    return path


@pytest.mark.parametrize("key", ["weighting", "distill.weighting"])
def test_hpo_accepts_both_spellings_in_base_and_space(tmp_path, key):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fixed_only = load_search(_search_file(tmp_path, key))
        searched = load_search(_search_file(tmp_path, key, space_key=key))
    assert bool([w for w in record if issubclass(w.category, MovedKeyWarning)]) == (key == "weighting")
    assert fixed_only.fixed["distill.weighting"] == "instance"
    assert searched.space.names()[0] == "distill.weighting"  # suggested first: the others depend on it
    assert any(a == "distill.weighting=instance" for a in fixed_only.base_args)


def test_hpo_space_that_the_weighting_cannot_use_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": {"method": "msd", "distill.weighting": "uniform"},
                                    "space": {"distill.weighting_params.temperature": "default"}}))
    with pytest.raises(SearchFileError, match=r"distill.weighting in \['instance'\].*distill.weighting=uniform"):
        load_search(path)


def test_move_keys_leaves_the_new_home_and_other_keys_alone():
    tree = {"distill": {"weighting": "a", "weighting_params": {"x": 1}}, "axes": {"seed": [0]}}
    assert move_keys(tree, "t") == tree
    with pytest.warns(MovedKeyWarning):
        assert move_keys({"base": {"weighting": "b"}}, "t") == {"base": {"distill.weighting": "b"}}
