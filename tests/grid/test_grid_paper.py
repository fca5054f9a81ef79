"""``experiments/paper.yaml``: what the paper-scale grid asks for, and its smoke scale run end
to end on CPU (MiniLM standing in for BERT-base, tiny data, two updates).

The paper scale is only expanded here (one seed, through a grid file that includes it): the
cells' configs are what a GPU cluster would train. The smoke scale trains every cell of the
same grid: both teacher families, a label-only student, and students distilled across
families through the teacher cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from benchmark.config.loader import build_config
from benchmark.grid.backend import safe_name
from benchmark.grid.cells import expand
from benchmark.grid.dag import CACHE
from benchmark.grid.runner import run_grid
from benchmark.grid.spec import load_grid
from benchmark.tracking.run_id import compute_run_id
from benchmark.tracking.run_store import RunDir

PAPER = Path(__file__).resolve().parents[2] / "experiments" / "paper.yaml"
FIXED = ["env.data_dir=/nonexistent/data", "env.save_dir=/nonexistent/runs", "env.cache_dir=/nonexistent/cache"]
# MMF's project configs (docs/assumptions.md, "Paper scale"): max_updates and warm-up per dataset
MMF_SCHEDULE = {"hateful_memes": (22000, 2000), "mmimdb": (22000, 2000),
                "visual_entailment": (60000, 6000), "vqa2": (60000, 6000)}
TEACHER_LR = {"visual_bert": 5.0e-5, "mmbt": 1.0e-5}
DISTILLING = ("kd", "msd-uniform", "msd-population", "msd-instance", "msd-learned")


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The paper-scale grid with one seed (a grid file that includes paper.yaml)."""
    path = tmp_path_factory.mktemp("paper") / "paper_seed0.yaml"
    path.write_text(yaml.safe_dump({"includes": [str(PAPER)], "axes": {"seed": [0]}}))
    return expand(load_grid(path), FIXED)


def test_paper_scale_has_two_bert_base_teacher_families_per_dataset(paper):
    teachers = [c for c in paper.cells if c.role == "teacher"]
    assert sorted(c.name for c in teachers) == sorted(
        f"{ds}/{family}/teacher/seed0" for ds in MMF_SCHEDULE for family in TEACHER_LR)
    for cell in teachers:
        family = cell.name.split("/")[1]
        config = cell.config
        assert config.model == family and config.model_size == "paper_base"
        assert config.model_config[family].bert_model_name == "bert-base-uncased"
        assert config.optimizer.type == "adam_w" and config.optimizer.params.lr == TEACHER_LR[family]
        assert config.scheduler.type == "warmup_linear" and config.training.batch_size == 32
        assert config.training.fp16 is True
        assert (config.training.max_updates, config.scheduler.params.num_warmup_steps) == MMF_SCHEDULE[config.dataset]
        assert cell.resources.gpus == 1 and cell.resources.timeout_min == 1440
    assert paper.spec.data.generate is False  # the user's MMF data, never generated over


def test_paper_scale_students_are_smaller_and_cross_every_teacher_family(paper):
    cells = paper.by_name()
    students = [c for c in paper.cells if c.role == "student"]
    # per dataset: 2 student models x (label-only + 5 distilling methods x 2 families)
    assert len(students) == 4 * 2 * (1 + len(DISTILLING) * 2)
    for ds in MMF_SCHEDULE:
        for model in ("visual_bert", "late_fusion"):
            label_only = cells[f"{ds}/{model}/student_only/seed0"]
            assert label_only.teacher is None and label_only.config.teacher is None
            for method in DISTILLING:
                by_family = {f: cells[f"{ds}/{model}/{method}-from_{f}/seed0"] for f in TEACHER_LR}
                for family, cell in by_family.items():
                    teacher = cells[f"{ds}/{family}/teacher/seed0"]
                    assert cell.teacher == teacher.name and cell.config.teacher == teacher.run_id
                    assert cell.config.model == model and cell.config.training.fp16 is True
                    assert cell.config.optimizer.params.lr == 5.0e-5
                # the same student distilled from two families: two runs
                assert len({c.run_id for c in by_family.values()}) == 2
    vb = cells["vqa2/visual_bert/kd-from_mmbt/seed0"].config.model_config.visual_bert
    assert vb.bert_model_name == "minilm"
    lf = cells["vqa2/late_fusion/kd-from_mmbt/seed0"].config.model_config.late_fusion
    assert lf.text_encoder.type == "minilm" and lf.presets.student.fusion.hidden_size == 384


def test_paper_cells_are_what_msd_run_builds_from_their_command_lines(paper):
    """The grid's fast config path (with a ``+key`` and a preset override) equals the loader's."""
    picked = [paper.by_name()[n] for n in ("mmimdb/mmbt/teacher/seed0", "vqa2/late_fusion/msd-learned-from_visual_bert/seed0",
                                           "hateful_memes/visual_bert/kd-from_mmbt/seed0")]
    for cell in picked:
        reference = build_config(list(cell.args))
        assert reference == cell.config and compute_run_id(reference) == cell.run_id


@pytest.mark.slow  # 1-2.5 min on 2 cores: every cell of the paper grid trains (make test-all)
def test_paper_smoke_scale_trains_every_cell_on_cpu(tmp_path, grid_tools):
    report = run_grid(PAPER, scale="smoke", extra_args=grid_tools.env_args(tmp_path), workers=2)
    assert report.exit_code == 0, [(t, s.error, s.log) for t, s in report.states.items() if s.error]
    cells = {c.name: c for c in report.plan.cells}
    assert sorted(cells) == sorted([
        "hateful_memes/visual_bert/teacher/seed0", "hateful_memes/mmbt/teacher/seed0",
        "hateful_memes/visual_bert/student_only/seed0", "hateful_memes/visual_bert/kd-from_mmbt/seed0",
        "hateful_memes/late_fusion/msd-instance-from_visual_bert/seed0",
    ])
    runs = {name: RunDir(tmp_path / "runs" / cell.run_id) for name, cell in cells.items()}
    assert all(run.is_complete() for run in runs.values())
    assert len({cell.run_id for cell in cells.values()}) == len(cells)

    # Teachers: the two families, MiniLM standing in for bert-base-uncased, fp32 on CPU.
    for family in TEACHER_LR:
        teacher = cells[f"hateful_memes/{family}/teacher/seed0"]
        summary = runs[teacher.name].read_summary()
        assert summary["model"] == family and summary["model_description"]["size"] == "paper_base"
        assert teacher.config.model_config[family].bert_model_name == "minilm"
        assert summary["precision"] == "fp32" and summary["updates"] >= 1

    # Each distilling student read its own family's teacher through that teacher's cache.
    caches = {Path(result["cache"]) for _task, result in _cache_results(report)}
    assert len(caches) == 2
    for name in ("hateful_memes/visual_bert/kd-from_mmbt/seed0",
                 "hateful_memes/late_fusion/msd-instance-from_visual_bert/seed0"):
        student, teacher = cells[name], cells[cells[name].teacher]
        details = runs[name].read_summary()["method_details"]
        assert details["teacher_source"] == "cache" and details["teacher_run"] == teacher.run_id
        cache = Path(details["teacher_cache"])
        assert cache in caches and (tmp_path / "cache") in cache.parents
        meta = json.loads((cache / "meta.json").read_text())["inputs"]
        checkpoint = (tmp_path / "runs" / teacher.run_id / "checkpoint.pt").read_bytes()
        assert meta["teacher_run"] == teacher.run_id
        assert meta["teacher_checkpoint_sha256"] == hashlib.sha256(checkpoint).hexdigest()
        assert student.config.model != teacher.config.model  # a student of another family


def _cache_results(report):
    """(task id, result) of each teacher-cache task, as its worker recorded it."""
    for task in report.plan.tasks.values():
        if task.kind == CACHE:
            result = report.plan.state_dir / "tasks" / f"{safe_name(task.id)}.result.json"
            yield task.id, json.loads(result.read_text())


# -- teacher families (the grid feature paper.yaml needs) ----------------------------------------
def _family_grid(grid_tools, path, **extra):
    spec = {
        "name": "fam", "base": {"model": "late_fusion", "training.max_epochs": 3},
        "axes": {"dataset": ["hateful_memes"],
                 "model": {"values": ["late_fusion", "visual_bert"],
                           "overrides": {"visual_bert": {"model_config.visual_bert.hidden_size": 48}}},
                 "method": {"values": ["teacher", "student_only", "kd"]}, "seed": [0]},
        "teachers": {"families": {
            "big_vb": {"overrides": {"model": "visual_bert", "model_size": "paper_base",
                                     "model_config.visual_bert.num_hidden_layers": 3},
                       "resources": {"gpus": 4}},
            "mmbt": {"overrides": {"model": "mmbt", "training.max_epochs": 7}}},
            "resources": {"timeout_min": 99}},
        "resources": {"gpus": 1},
    }
    for key, value in extra.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return grid_tools.write_grid(path, **spec)


def test_teacher_families_cross_students_and_configure_only_their_teachers(tmp_path, grid_tools):
    cells = expand(load_grid(_family_grid(grid_tools, tmp_path / "fam.yaml")), FIXED).by_name()
    assert sorted(cells) == sorted([
        "hateful_memes/big_vb/teacher/seed0", "hateful_memes/mmbt/teacher/seed0",
        "hateful_memes/late_fusion/student_only/seed0", "hateful_memes/visual_bert/student_only/seed0",
        "hateful_memes/late_fusion/kd-from_big_vb/seed0", "hateful_memes/late_fusion/kd-from_mmbt/seed0",
        "hateful_memes/visual_bert/kd-from_big_vb/seed0", "hateful_memes/visual_bert/kd-from_mmbt/seed0",
    ])
    big, mmbt = cells["hateful_memes/big_vb/teacher/seed0"], cells["hateful_memes/mmbt/teacher/seed0"]
    assert (big.config.model, big.config.model_size, big.config.model_config.visual_bert.num_hidden_layers) == (
        "visual_bert", "paper_base", 3)
    assert big.config.model_config.visual_bert.hidden_size == 64  # the students' model override stays theirs
    assert (mmbt.config.model, mmbt.config.training.max_epochs) == ("mmbt", 7)
    assert (big.resources.gpus, big.resources.timeout_min, mmbt.resources.gpus) == (4, 99, 1)
    student = cells["hateful_memes/visual_bert/kd-from_mmbt/seed0"]
    assert student.config.teacher == mmbt.run_id and student.teacher == mmbt.name
    assert student.config.training.max_epochs == 3 and student.resources.gpus == 1
    assert student.config.model_config.visual_bert.hidden_size == 48
    for cell in cells.values():  # each cell is exactly what `msd run <its args>` builds
        assert compute_run_id(build_config(list(cell.args))) == cell.run_id


@pytest.mark.parametrize(("extra", "message"), [
    ({"axes": {"teacher": ["a"]}}, "declare teacher families under teachers.families"),
    ({"teachers": {"share": ["dataset", "model", "seed"]}}, "teachers.share names 'model'"),
    ({"teachers": {"families": {"mmbt": {"overrides": {"model": "mmbt", "model_config.mmbt.num_image_tokns": 2}}}}},
     "num_image_tokns"),
    ({"teachers": {"families": {"mmbt": {"overrides": {"training.max_epoch": 2}}}}}, "did you mean training.max_epochs"),
    ({"scales": {"tiny": {"teachers": {"families": {"mmtb": {"overrides": {}}}}}}}, "did you mean mmbt"),
])
def test_teacher_family_mistakes_are_one_clear_grid_error(tmp_path, grid_tools, extra, message):
    from benchmark.errors import UserError

    path = _family_grid(grid_tools, tmp_path / "bad.yaml", **extra)
    with pytest.raises(UserError, match=message):
        expand(load_grid(path, "tiny" if "scales" in extra else "default"), FIXED)


def test_a_scale_swaps_family_overrides_and_keeps_the_overrides_of_the_values_it_keeps(tmp_path, grid_tools):
    path = _family_grid(grid_tools, tmp_path / "scaled.yaml", scales={"tiny": {
        "axes": {"model": ["visual_bert"]},
        "teachers": {"families": {"mmbt": {"overrides": {"training.max_epochs": 1}, "resources": {"gpus": 0}}},
                     "resources": {"timeout_min": 5}}}})
    cells = expand(load_grid(path, "tiny"), FIXED).by_name()
    mmbt = cells["hateful_memes/mmbt/teacher/seed0"]
    assert (mmbt.config.model, mmbt.config.training.max_epochs, mmbt.resources.gpus, mmbt.resources.timeout_min) == (
        "mmbt", 1, 0, 5)
    assert cells["hateful_memes/big_vb/teacher/seed0"].config.model_config.visual_bert.num_hidden_layers == 3
    assert cells["hateful_memes/visual_bert/student_only/seed0"].config.model_config.visual_bert.hidden_size == 48
    assert not any("late_fusion" in name for name in cells)


def test_a_grid_on_existing_data_names_the_missing_files_instead_of_generating(tmp_path):
    from benchmark.errors import DataError
    from benchmark.grid.worker import run_data

    config = build_config(["dataset=mmimdb", f"env.data_dir={tmp_path / 'mmf'}"])
    task = {"dataset": "mmimdb", "data_dir": str(tmp_path / "mmf"), "size": None, "seed": 0, "generate": False,
            "config": OmegaConf.to_container(config, resolve=True)}
    with pytest.raises(DataError, match=r"data.generate: false.*mmimdb/defaults/annotations/train.jsonl"):
        run_data(task)
    assert not (tmp_path / "mmf").exists()  # nothing generated


@pytest.mark.parametrize("dataset", ["mmimdb", "hateful_memes"])
def test_generated_data_is_known_as_generated_whatever_the_datasets_data_dir(tmp_path, dataset, capsys):
    """MM-IMDB's dataset node is env.data_dir itself (MMF's layout) while Hateful Memes' is
    env.data_dir/datasets; the grid must find either generator's manifest, or it takes
    generated data for a user's real data and never regenerates it when the generator changes."""
    from benchmark.data.make import make_dataset
    from benchmark.grid.worker import run_data

    data_dir = tmp_path / "data"
    make_dataset(dataset, data_dir, size=32)
    config = build_config([f"dataset={dataset}", f"env.data_dir={data_dir}"])
    task = {"dataset": dataset, "data_dir": str(data_dir), "size": 32, "seed": 0, "generate": True,
            "config": OmegaConf.to_container(config, resolve=True)}
    assert run_data(task) == {"skipped": True}  # up to date, not "real data"
    assert "up to date" in capsys.readouterr().out
    task["size"] = 48  # the generator's key changed: generated data is made again
    assert run_data(task) == {"skipped": False}
