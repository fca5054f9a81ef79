"""Grid files -> cells: names, include/exclude, per-axis overrides, teacher wiring, errors.

No training here: expansion only builds configs, so these tests are fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config.loader import build_config
from benchmark.errors import ConfigError, UserError
from benchmark.grid.cells import expand
from benchmark.grid.dag import CACHE, DATA, TRAIN, build_plan
from benchmark.grid.spec import GridError, load_grid
from benchmark.registry import registry
from benchmark.tracking.run_id import compute_run_id

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
DATASETS = ("hateful_memes", "mmimdb", "visual_entailment", "vqa2")
# The dataset's data_dir (interpolated from env.data_dir) is part of the run id: pin it.
FIXED = ["env.data_dir=/nonexistent/data", "env.save_dir=/nonexistent/runs", "env.cache_dir=/nonexistent/cache"]


@pytest.fixture(scope="module")
def table2():
    return expand(load_grid(EXPERIMENTS / "table2.yaml"), FIXED)


def test_table2_has_every_cell_with_readable_names(table2):
    names = [c.name for c in table2.cells]
    assert len(names) == len(set(names)) == 4 * 3 * 7  # datasets x seeds x (teacher + 6 students)
    for ds in DATASETS:
        for seed in range(3):
            for label in ("teacher", "student_only", "kd", "msd-uniform", "msd-population", "msd-instance",
                          "msd-learned"):
                assert f"{ds}/{label}/seed{seed}" in names
    assert names[:12] == [f"{ds}/teacher/seed{s}" for ds in DATASETS for s in range(3)]  # teachers first


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_names_and_run_ids_are_stable_across_expansions(table2):
    again = expand(load_grid(EXPERIMENTS / "table2.yaml"), [FIXED[0], "env.save_dir=/elsewhere"])  # volatile
    assert [(c.name, c.run_id) for c in again.cells] == [(c.name, c.run_id) for c in table2.cells]


def test_students_point_at_the_teacher_of_their_dataset_and_seed(table2):
    cells = table2.by_name()
    for cell in table2.cells:
        if cell.role == "teacher" or cell.config.method == "student_only":
            assert cell.teacher is None and cell.config.teacher is None
            continue
        ds, _, seed = cell.name.split("/")
        teacher = cells[f"{ds}/teacher/{seed}"]
        assert cell.teacher == teacher.name and cell.config.teacher == teacher.run_id and cell.needs_cache
    # The teacher id is the hash of the teacher's own resolved config, known before it trains.
    teacher = cells["mmimdb/teacher/seed2"]
    assert compute_run_id(build_config(list(teacher.args))) == teacher.run_id
    assert teacher.config.method == "teacher" and teacher.config.training.seed == 2
    # kd/student_only carry no weighting; msd cells carry theirs.
    assert cells["vqa2/kd/seed0"].config.distill.weighting == "none"
    assert cells["vqa2/msd-learned/seed0"].config.distill.weighting == "learned"


def test_fast_config_builder_matches_build_config(table2):
    for cell in table2.cells[::9]:
        reference = build_config(list(cell.args))
        assert compute_run_id(reference) == cell.run_id
        assert reference == cell.config


def test_each_cell_gets_the_recipe_of_its_model_size(table2):
    # The fast builder shares one unresolved tree per dataset; the lr recipe must still
    # follow each cell's own method (teacher preset vs student preset).
    lrs = {(cell.role, cell.config.dataset == "mmimdb", cell.config.optimizer.params.lr) for cell in table2.cells}
    # MM-IMDB's students have their dataset's recipe (docs/calibration.md, round 17)
    assert lrs == {("teacher", False, 1.0e-3), ("student", False, 3.0e-3), ("teacher", True, 1.0e-3), ("student", True, 1.0e-2)}


def test_per_axis_overrides_resources_include_exclude_and_only_for(tmp_path, grid_tools):
    grid = grid_tools.write_grid(
        tmp_path / "g.yaml", name="g",
        base={"model": "late_fusion", "training": {"max_epochs": 3}},
        axes={
            "dataset": {"values": ["hateful_memes", "mmimdb"],
                        "overrides": {"mmimdb": {"training.max_epochs": 6}},
                        "resources": {"mmimdb": {"mem_gb": 16}}},
            "method": {"values": ["teacher", "kd", "msd"]},
            "distill.weighting": ["uniform", "instance"],  # only_for msd by default
            "seed": [0, 1],
        },
        exclude=[{"dataset": "hateful_memes", "distill.weighting": "uniform"}],
        include=[{"method": "kd", "distill.temperature": 4.0}],
        labels={"distill.temperature": "tau"},
        teachers={"overrides": {"training.max_epochs": 10}},
    )
    cells = expand(load_grid(grid)).by_name()
    assert "hateful_memes/msd-uniform/seed0" not in cells  # excluded
    assert "mmimdb/msd-uniform/seed1" in cells and "hateful_memes/msd-instance/seed1" in cells
    assert "hateful_memes/kd/seed0" in cells and "hateful_memes/kd-uniform/seed0" not in cells  # only_for
    assert cells["mmimdb/kd/seed0"].config.training.max_epochs == 6
    assert cells["hateful_memes/kd/seed0"].config.training.max_epochs == 3
    assert cells["mmimdb/kd/seed0"].resources.mem_gb == 16 and cells["hateful_memes/kd/seed0"].resources.mem_gb == 4
    assert cells["mmimdb/teacher/seed0"].config.training.max_epochs == 10  # teachers.overrides win
    tau = cells["mmimdb/kd-tau4/seed1"]
    assert tau.config.distill.temperature == 4.0 and tau.teacher == "mmimdb/teacher/seed1"
    assert len([c for c in cells.values() if c.role == "teacher"]) == 4


def test_teachers_are_shared_and_identical_configs_are_one_run():
    grid = expand(load_grid(EXPERIMENTS / "ablations.yaml", "smoke"))
    teachers = [c for c in grid.cells if c.role == "teacher"]
    assert len(teachers) == 1
    cells = grid.by_name()
    kd = cells["hateful_memes/kd/seed0"]
    assert "hateful_memes/kd-tau1/seed0" in kd.aliases  # tau=1 is the default: same run id
    assert cells["hateful_memes/msd-instance-saliency_loss/seed0"].config.distill.saliency == "loss"
    assert cells["hateful_memes/msd-instance-tau4/seed0"].config.distill.temperature == 4.0
    assert len({c.run_id for c in grid.cells}) == len(grid.cells)


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_saliency_grid_reuses_table2_runs(table2):
    saliency = expand(load_grid(EXPERIMENTS / "saliency.yaml"), FIXED)
    assert saliency.spec.group == "saliency"
    assert {c.run_id for c in saliency.cells} == {c.run_id for c in table2.cells}


def test_scales_change_axes_overrides_and_data(tmp_path, grid_tools):
    grid = expand(load_grid(EXPERIMENTS / "table2.yaml", "smoke"), grid_tools.env_args(tmp_path))
    assert grid.spec.group == "table2-smoke"
    assert len(grid.cells) == 4 * 4
    cell = grid.by_name()["vqa2/msd-instance/seed0"]
    assert cell.config.training.max_epochs == 1
    assert cell.config.env.data_dir == str(tmp_path / "data" / "size64")  # never the full-size data's folder
    assert cell.resources.timeout_min == 15
    with pytest.raises(GridError, match="no scale 'huge'.*default, smoke"):
        load_grid(EXPERIMENTS / "table2.yaml", "huge")


def test_easy_vqa_grid_expands():
    grid = expand(load_grid(EXPERIMENTS / "easy_vqa.yaml"))
    assert {c.dataset for c in grid.cells} == {"easy_vqa"} and len(grid.cells) == 3 * 7


def test_plan_orders_data_teachers_caches_students(tmp_path, grid_tools):
    grid = expand(load_grid(grid_tools.tiny_grid(tmp_path / "g.yaml", ["teacher", "student_only", "kd", "msd"])),
                  grid_tools.env_args(tmp_path))
    plan = build_plan(grid)
    kinds = [t.kind for t in plan.tasks.values()]
    assert kinds.count(DATA) == 1 and kinds.count(CACHE) == 1 and kinds.count(TRAIN) == 4
    order = list(plan.tasks)
    position = {t.label: i for i, t in enumerate(plan.tasks.values())}
    cache = next(t for t in plan.tasks.values() if t.kind == CACHE)
    for task in plan.tasks.values():
        assert all(order.index(d) < order.index(task.id) for d in task.deps)
    kd = next(t for t in plan.tasks.values() if t.label == "hateful_memes/kd/seed0")
    assert cache.id in kd.deps and position[cache.label] > position["hateful_memes/teacher/seed0"]
    only = build_plan(grid, "*/kd/*")  # the teacher a selected student needs comes along
    assert sorted(t.label for t in only.train_tasks()) == ["hateful_memes/kd/seed0", "hateful_memes/teacher/seed0"]
    with pytest.raises(GridError, match="matches no cell"):
        build_plan(grid, "nothing/*")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"axes": {"distill.temprature": [1, 2]}}, r"unknown axis key 'distill.temprature'.*distill.temperature"),
        ({"axes": {"sede": [0]}}, r"unknown axis key 'sede'.*seed"),
        ({"axes": {"seed": []}}, r"non-empty list"),
        ({"axes": {"seed": [0]}, "exclude": [{"seed": [0]}]}, r"expands to no cells"),
        ({"axes": {"seed": [0]}, "exclude": [{"method": "kd"}]}, r"exclude\[0\] names 'method', which is not an axis"),
        ({"axes": {"seed": [0]}, "bogus": 1}, r"unknown entry 'bogus'"),
        ({"axes": {"seed": [0]}, "base": {"training.max_epoch": 2}}, r"training.max_epochs"),
        ({"axes": {"method": {"values": ["kd"], "overrides": {"msd": {}}}}}, r"not values of method"),
    ],
)
def test_bad_grid_files_fail_with_a_clear_message(tmp_path, grid_tools, spec, message):
    path = grid_tools.write_grid(tmp_path / "bad.yaml", **spec)
    with pytest.raises(UserError, match=message):
        expand(load_grid(path))


def test_unknown_launcher_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown launcher 'slrum'.*'slurm'"):
        registry.get_launcher("slrum")
    assert {"local", "slurm"} <= set(registry.names("launcher"))
    with pytest.raises(GridError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")
