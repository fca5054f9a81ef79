"""The plugin against a fake ``mmf`` registry: what gets registered, with which signatures, and
that ``msd_kd`` computes exactly :mod:`benchmark.distill`'s numbers (one implementation)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from benchmark.distill.losses import label_loss_for_task
from benchmark.distill.objective import build_objective
from benchmark.distill.weighting import instance_weights
from benchmark.mmf_plugin.objective import output_key

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "benchmark" / "mmf_plugin"


def test_importing_the_suite_and_the_plugin_never_imports_mmf():
    code = "import sys, benchmark, benchmark.mmf_plugin as p; assert not any(m.split('.')[0] == 'mmf' for m in sys.modules); print(sorted(p.NAMES.values()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['msd_kd', 'msd_student', 'msd_wandb']"


def test_mmf_user_dir_import_registers_the_three_names(fake_mmf, monkeypatch):
    # What mmf.utils.env.import_user_module does for an absolute env.user_dir.
    monkeypatch.syspath_prepend(str(PLUGIN_DIR.parent))
    monkeypatch.delitem(sys.modules, "mmf_plugin", raising=False)
    monkeypatch.delitem(sys.modules, "benchmark.mmf_plugin", raising=False)
    importlib.import_module("mmf_plugin")
    assert set(fake_mmf.mapping["model"]) == {"msd_student"}
    assert set(fake_mmf.mapping["loss"]) == {"msd_kd"}
    assert set(fake_mmf.mapping["callback"]) == {"msd_wandb"}
    # the <repo>/benchmark entry (which would shadow packages named data, models, ...) is gone
    assert all(Path(p).resolve() != PLUGIN_DIR.parent for p in sys.path if p)
    assert fake_mmf.mapping["model"]["msd_student"].__module__ == "benchmark.mmf_plugin.model"


def test_registered_signatures(fake_mmf):
    from benchmark.mmf_plugin import register

    classes = register()
    model, loss, callback = classes["model"], classes["loss"], classes["callback"]
    assert fake_mmf.get_model_class("msd_student") is model
    assert list(inspect.signature(model.__init__).parameters) == ["self", "config"]
    assert list(inspect.signature(model.forward).parameters) == ["self", "sample_list"]
    assert Path(model.config_path()).is_file()
    assert list(inspect.signature(loss.forward).parameters) == ["self", "sample_list", "model_output"]
    params = inspect.signature(loss.__init__).parameters
    assert {k: params[k].default for k in ("alpha", "temperature", "weighting", "saliency")} == {
        "alpha": 0.5, "temperature": 1.0, "weighting": "uniform", "saliency": "divergence"}
    assert list(inspect.signature(callback.__init__).parameters)[:3] == ["self", "config", "trainer"]
    for hook in ("on_update_end", "on_validation_end", "on_test_end", "teardown"):
        assert callable(getattr(callback, hook))


def _outputs(task: str, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = 2 if task == "single_label" else 5
    out = {k: torch.randn(4, c, generator=g) for k in (
        "scores", "scores_image", "scores_text", "teacher_scores", "teacher_scores_image", "teacher_scores_text")}
    targets = torch.tensor([0, 1, 1, 0]) if task == "single_label" else (torch.rand(4, c, generator=g) > 0.5).float()
    return out, targets


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
@pytest.mark.parametrize("weighting", ["none", "uniform", "instance", "only_text", "population"])
def test_msd_kd_equals_the_suites_objective(fake_mmf, task, weighting):
    """MMF's ``msd_kd`` maps its keys onto the objective the suite's ``method=kd|msd`` builds, through
    the same :func:`build_objective`: the same number on the same logits."""
    from benchmark.mmf_plugin.loss import MSDKDLoss

    population = {"image": 0.3, "text": 0.1}
    loss = MSDKDLoss(alpha=0.3, temperature=2.0, weighting=weighting, population_saliency=population)
    out, targets = _outputs(task)
    parts = loss({"targets": targets}, out)
    value = loss.objective(out, targets)

    suite = build_objective(alpha=0.3, temperature=2.0, weighting=weighting)
    if suite.needs_population:
        suite.setup(population)
    student = {v: out[output_key(v)] for v in suite.student_views}
    teacher = {v: out[output_key(v, teacher=True)] for v in ("multi", "image", "text")}
    expected, terms, _ = suite(student, teacher, targets, task, label_loss_for_task(task))
    assert torch.equal(value, expected)
    assert loss.last_terms == pytest.approx({k: float(v) for k, v in terms.items()})
    # MMF gets one loss-dict entry per term (its log shows each); they add up to the same total
    aux = [m for m in ("image", "text") if f"loss/aux_{m}" in terms]
    assert set(parts) == {"label", "kd", *(f"aux_{m}" for m in aux)}
    assert all(p.requires_grad or not value.requires_grad for p in parts.values())
    assert torch.allclose(sum(parts.values()), expected, rtol=1e-6, atol=1e-7)
    assert float(parts["label"]) == pytest.approx(0.7 * float(terms["loss/label"]), rel=1e-6)
    assert float(parts["kd"]) == pytest.approx(0.3 * float(terms["loss/kd"]), rel=1e-6)
    for m in aux:
        assert float(parts[f"aux_{m}"]) == pytest.approx(float(terms[f"loss/aux_{m}_weighted"]), rel=1e-6)
    if weighting == "population":  # and the population weights are the hand values M * s_m / sum_k s_k
        assert loss.last_terms["weight/image_mean"] == pytest.approx(2 * 0.3 / 0.4)


def test_msd_kd_uses_cached_saliency_and_refuses_learned(fake_mmf):
    from benchmark.errors import ConfigError
    from benchmark.mmf_plugin.loss import MSDKDLoss

    out, targets = _outputs("single_label")
    out["teacher_saliency_image"] = torch.tensor([1.0, 0.0, 2.0, 0.5])
    out["teacher_saliency_text"] = torch.tensor([0.0, 1.0, 2.0, 0.5])
    weights = instance_weights({"image": out["teacher_saliency_image"], "text": out["teacher_saliency_text"]})
    loss = MSDKDLoss(weighting="instance")
    loss({"targets": targets}, out)
    assert loss.last_terms["weight/image_mean"] == pytest.approx(float(weights["image"].mean()))
    with pytest.raises(ConfigError, match="learned"):
        MSDKDLoss(weighting="learned")
    with pytest.raises(ConfigError, match="population"):
        MSDKDLoss(weighting="population")({"targets": targets}, out)


def _tiny_model_class(fake_mmf):
    base = sys.modules["mmf.models.base_model"].BaseModel

    @fake_mmf.register_model("tiny")
    class Tiny(base):
        """Masked-mean text + masked-mean regions -> linear: reads exactly the keys the view rule edits."""

        def build(self) -> None:
            self.embed = nn.Embedding(30522, 8)
            self.head = nn.Linear(16, int(self.config.num_labels))

        def forward(self, sample_list):
            mask = sample_list["input_mask"].float().unsqueeze(-1)
            text = (self.embed(sample_list["input_ids"]) * mask).sum(1) / mask.sum(1).clamp(min=1)
            feats = sample_list["image_feature_0"]
            count = sample_list["image_info_0"]["max_features"].reshape(-1, 1)
            rows = (torch.arange(feats.shape[1])[None, :] < count).float().unsqueeze(-1)
            image = (feats * rows).sum(1) / rows.sum(1).clamp(min=1)
            return {"scores": self.head(torch.cat([text, image], 1))}

    return Tiny


def test_msd_student_with_an_mmf_checkpoint_teacher(fake_mmf, tmp_path, tiny_batch):
    from benchmark.mmf_plugin import register
    from benchmark.mmf_plugin.views import view_sample_list

    classes = register()
    _tiny_model_class(fake_mmf)
    build = sys.modules["mmf.utils.build"].build_model
    torch.manual_seed(0)
    teacher = build(OmegaConf.create({"model": "tiny", "num_labels": 2}))
    ckpt = tmp_path / "teacher.ckpt"
    torch.save({"model": teacher.state_dict(), "config": {"model": "tiny", "model_config": {"tiny": {"num_labels": 2}}}}, ckpt)
    full = OmegaConf.load(classes["model"].config_path())
    node = full.model_config.msd_student
    node.student_model, node.student_config = "tiny", {"num_labels": 2}
    node.teacher.checkpoint = str(ckpt)
    node.distill.weighting = "only_image"  # what model_config.msd_student.distill.weighting=... sets
    config = OmegaConf.create(OmegaConf.to_container(full, resolve=True)).model_config.msd_student
    config.model = "msd_student"
    student = build(config)

    out = student.forward(tiny_batch)
    assert set(out) == {"scores", "scores_image", "teacher_scores", "teacher_scores_image", "teacher_scores_text"}
    for view in ("multi", "image", "text"):
        key = "teacher_scores" if view == "multi" else f"teacher_scores_{view}"
        assert torch.allclose(out[key], teacher.forward(view_sample_list(tiny_batch, view))["scores"])
    assert all(k.startswith("student.") or k.startswith("losses.") for k in student.state_dict())
    assert not any(p is q for p in student.parameters() for q in teacher.parameters())
    parts = student.losses[0]({"targets": tiny_batch["targets"]}, out)
    assert set(parts) == {"label", "kd", "aux_image"}  # only_image: one auxiliary term
    assert all(p.requires_grad and torch.isfinite(p) for p in parts.values())


@pytest.mark.parametrize("weighting,asked", [("instance", 0), ("uniform", 0), ("population", 1)])
def test_msd_student_asks_the_teacher_for_population_saliency_only_when_the_scheme_needs_it(
        fake_mmf, monkeypatch, weighting, asked):
    from benchmark.mmf_plugin import register

    classes = register()
    _tiny_model_class(fake_mmf)
    model_module = sys.modules[classes["model"].__module__]  # as registered against the fake MMF
    Teacher = model_module.Teacher
    calls: list[str] = []

    class StubTeacher(Teacher):
        model = nn.Identity()

        def population_saliency(self, saliency: str):
            calls.append(saliency)
            return {"image": 0.3, "text": 0.1}

        def outputs(self, sample_list, saliency):
            return {}

        def describe(self):
            return {"source": "stub"}

    monkeypatch.setattr(model_module, "load_teacher", lambda spec: StubTeacher())
    full = OmegaConf.load(classes["model"].config_path())
    node = full.model_config.msd_student
    node.student_model, node.student_config = "tiny", {"num_labels": 2}
    node.distill.weighting, node.distill.saliency = weighting, "loss"
    config = OmegaConf.create(OmegaConf.to_container(full, resolve=True)).model_config.msd_student
    config.model = "msd_student"
    student = sys.modules["mmf.utils.build"].build_model(config)
    assert calls == ["loss"] * asked  # the loss's saliency definition, asked once, and only by population
    if asked:
        assert student.losses[0].objective.scheme.describe()["weights"] == pytest.approx({"image": 1.5, "text": 0.5})
