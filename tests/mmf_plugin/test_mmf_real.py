"""With a real MMF install (marker ``mmf``): MMF reads the suite's synthetic data unchanged, and
``mmf_run`` trains ``msd_student`` with the plugin for a few updates on every dataset.

Run from the MMF environment (``docs/mmf.md``)::

    PYTHONPATH=<repo> <mmf-env>/bin/python -m pytest tests/mmf_plugin -m mmf

Everything is offline, through the configs a user runs (``benchmark/mmf_plugin/configs/offline``):
data from :func:`benchmark.data.make.make_dataset`, the tokenizer folder of
``python -m benchmark.mmf_plugin.offline`` (the suite's packaged ``vocab.txt``) and a tiny
randomly initialised VisualBERT (``bert_model_name: null``), so nothing is downloaded from a hub.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.config.loader import build_config
from benchmark.data.build import build_dataset
from benchmark.data.make import make_dataset
from benchmark.mmf_plugin.offline import write_tokenizer

pytestmark = pytest.mark.mmf
REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "benchmark" / "mmf_plugin"
MMF_RUN = Path(sys.executable).parent / "mmf_run"
if importlib.util.find_spec("mmf") is None or not MMF_RUN.exists():
    pytest.skip("MMF is not installed in this Python environment (no `mmf` module or `mmf_run` beside "
                f"{sys.executable}); run these tests from an MMF environment, see docs/mmf.md.",
                allow_module_level=True)

DATASETS = {  # dataset -> (headline metric, extra mmf_run args)
    "hateful_memes": ("roc_auc", []),
    "mmimdb": ("multilabel_micro_f1", []),
    "visual_entailment": ("accuracy", []),
    "vqa2": ("vqa_accuracy", []),
}
OFFLINE = PLUGIN / "configs" / "offline"
TINY_BERT = {"bert_model_name": None, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64, "special_visual_initialize": False, "vocab_size": 30522,
             "max_position_embeddings": 512, "type_vocab_size": 2}  # the view-rule test's model
RUN_ARGS = ["run_type=train_val", "training.max_updates=4", "training.batch_size=8", "training.log_interval=2",
            "training.evaluation_interval=4", "training.num_workers=0", "scheduler.params.num_warmup_steps=1",
            "training.seed=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mmf")
    data = root / "data"
    for name in DATASETS:
        make_dataset(name, data, size=48, seed=0)
    tok = write_tokenizer(data)  # what docs/mmf.md's offline quick start runs
    bert = root / "tiny-bert"  # a local "pretrained" text encoder for MMBT
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(bert)
    for item in tok.iterdir():
        (bert / item.name).write_bytes(item.read_bytes())
    return {"root": root, "data": data, "tokenizer": tok, "bert": bert}


def _teacher_config(name: str) -> Path:
    return OFFLINE / name / "teacher.yaml"


def _student_config(name: str) -> Path:
    return OFFLINE / name / "student.yaml"


def _mmf_run(world: dict[str, Path], args: list[str], name: str, save: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("WANDB_DIR", None)
    cmd = [str(MMF_RUN), *args, f"dataset={name}", f"env.data_dir={world['data']}", f"env.save_dir={save}", *RUN_ARGS]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=world["root"], timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, f"{' '.join(cmd)}\n{log[-4000:]}"
    return log


@pytest.mark.parametrize("name", list(DATASETS))
def test_mmf_reads_the_suite_synthetic_data_unchanged(world, name, tmp_path):
    """MMF's own dataset builders on the directory written by ``make_dataset``, sample by sample."""
    config = _teacher_config(name)
    dump = tmp_path / "mmf.pt"
    script = f"""
import torch
from mmf.common.registry import registry
from mmf.utils.configuration import Configuration
from mmf.utils.env import setup_imports
from mmf.utils.flags import flags
setup_imports()
args = flags.get_parser().parse_args(["config={config}", "model=visual_bert", "datasets={name}",
                                      "env.data_dir={world['data']}"])
config = Configuration(args).get_config()
registry.register("config", config)
builder = registry.get_builder_class("{name}")()
node = config.dataset_config["{name}"]
builder.build_dataset(node, "train")
dataset = builder.load_dataset(node, "train")
rows = []
for i in range(len(dataset)):
    s = dataset[i]
    rows.append({{"input_ids": s.input_ids, "targets": s.targets, "features": s.image_feature_0,
                  "max_features": int(s.image_info_0["max_features"])}})
torch.save(rows, "{dump}")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    mmf_rows = torch.load(dump, weights_only=False)
    suite = build_dataset(build_config([f"dataset={name}", f"env.data_dir={world['data']}",
                                        "data.meta_split.fraction=0.0"]), "train")
    assert len(mmf_rows) == len(suite) > 0
    for i, row in enumerate(mmf_rows):
        ours = suite[i]
        assert torch.equal(row["input_ids"].long(), ours["input_ids"].long()), f"sample {i}: tokens differ"
        assert torch.allclose(row["targets"].float(), ours["targets"].float()), f"sample {i}: targets differ"
        n = row["max_features"]
        assert n == int(ours["image_info_0"]["max_features"]), f"sample {i}: region count differs"
        assert torch.allclose(row["features"][:n], ours["image_feature_0"][:n]), f"sample {i}: features differ"


@pytest.mark.parametrize("name", list(DATASETS))
def test_msd_student_trains_in_mmf_with_an_mmf_teacher(world, name, tmp_path, offline_runs):
    metric = DATASETS[name][0]
    teacher_cfg = _teacher_config(name)
    _mmf_run(world, [f"config={teacher_cfg}", "model=visual_bert"], name, tmp_path / "teacher")
    student_cfg = _student_config(name)
    log = _mmf_run(world, [f"config={student_cfg}", "model=msd_student", f"env.user_dir={PLUGIN}",
                           f"model_config.msd_student.teacher.checkpoint={tmp_path / 'teacher' / 'best.ckpt'}",
                           "model_config.msd_student.distill.weighting=instance"], name, tmp_path / "student")
    assert f"train/{name}/msd_kd" in log and f"val/{name}/{metric}" in log
    # each term of the objective is its own entry of MMF's loss dict, so MMF's own log shows it
    assert all(f"val/{name}/msd_kd/{term}" in log for term in ("label", "kd", "aux_image", "aux_text"))
    state = torch.load(tmp_path / "student" / "best.ckpt", map_location="cpu", weights_only=False)["model"]
    assert state and all(k.startswith(("student.", "losses.")) for k in state), "teacher weights leaked into the checkpoint"
    (run,) = offline_runs(tmp_path / "student")
    assert run["project"] == "msd-benchmark" and run["exit_code"] == 0
    assert any(f"val/{name}/{metric}" in row and "trainer/global_step" in row for row in run["history"])
    assert any("loss/aux_image" in row and "weight/image_mean" in row for row in run["history"])


def test_msd_student_with_a_suite_teacher_and_its_cache(world, tmp_path, offline_runs):
    """A teacher trained by ``msd run``, its cache built by ``msd cache build``, read by MMF by sample id."""
    name, runs, cache = "hateful_memes", tmp_path / "runs", tmp_path / "cache"
    suite_args = [f"dataset={name}", "model=visual_bert", f"env.data_dir={world['data']}", f"env.save_dir={runs}",
                  f"env.cache_dir={cache}", "tracking.wandb.enabled=false", "training.threads=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    for command in (["run", "--no-progress", "method=teacher", "training.max_epochs=1"], ["cache", "build"]):
        if command[0] == "cache":
            (run_dir,) = [p for p in runs.iterdir() if (p / "config.yaml").is_file()]  # not the store's own folders
            command = [*command, f"teacher={run_dir.name}"]
        out = subprocess.run([sys.executable, "-m", "benchmark.cli", *command, *suite_args],
                             capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    student_cfg = _student_config(name)
    log = _mmf_run(world, [f"config={student_cfg}", "model=msd_student", f"env.user_dir={PLUGIN}",
                           "model_config.msd_student.teacher.source=suite",
                           f"model_config.msd_student.teacher.run={run_dir.name}",
                           f"model_config.msd_student.teacher.save_dir={runs}",
                           # population weighting needs the dataset-level saliency, which only the cache gives
                           "model_config.msd_student.distill.weighting=population"], name, tmp_path / "student")
    assert "'source': 'suite'" in log and f"'cache': '{cache}" in log
    assert f"train/{name}/msd_kd" in log and f"val/{name}/roc_auc" in log
    (run,) = offline_runs(tmp_path / "student")
    weights = [row["weight/image_mean"] for row in run["history"] if "weight/image_mean" in row]
    assert weights and all(abs(w - 1.0) > 1e-6 for w in weights)  # population weights, not uniform
    # the same teacher live on MMF's batches (its own view rule), as for datasets without sample ids
    live = _mmf_run(world, [f"config={student_cfg}", "model=msd_student", f"env.user_dir={PLUGIN}",
                            "model_config.msd_student.teacher.source=suite", "model_config.msd_student.teacher.cache=off",
                            f"model_config.msd_student.teacher.run={run_dir.name}",
                            f"model_config.msd_student.teacher.save_dir={runs}",
                            "model_config.msd_student.distill.weighting=instance"], name, tmp_path / "live")
    assert "'cache': None" in live and f"val/{name}/roc_auc" in live


def test_mmbt_student_distils_from_a_visual_bert_teacher(world, tmp_path):
    """Any registered MMF model can be the student: MMBT (local tiny BERT, identity modal encoder)."""
    name = "hateful_memes"
    teacher_cfg = _teacher_config(name)
    _mmf_run(world, [f"config={teacher_cfg}", "model=visual_bert"], name, tmp_path / "teacher")
    mmbt = {"bert_model_name": str(world["bert"]), "modal_hidden_size": 64, "text_hidden_size": 32,
            "modal_encoder": {"type": "identity", "params": {"in_dim": 64}},
            "text_encoder": {"params": {"bert_model_name": str(world["bert"]), "hidden_size": 32,
                                        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}}}
    text = {"tokenizer_config": {"type": str(world["tokenizer"])}, "max_seq_length": 32}
    config = {"includes": [str(PLUGIN / "configs" / name / "mmbt.yaml")], "model_config": {"mmbt": mmbt},
              "dataset_config": {name: {"processors": {"text_processor": {"params": text}}}}}
    (tmp_path / "s.yaml").write_text(json.dumps(config))
    log = _mmf_run(world, [f"config={tmp_path / 's.yaml'}", "model=msd_student", f"env.user_dir={PLUGIN}",
                           f"model_config.msd_student.teacher.checkpoint={tmp_path / 'teacher' / 'best.ckpt'}"],
                   name, tmp_path / "student")
    assert "student mmbt" in log and f"train/{name}/msd_kd" in log and f"val/{name}/roc_auc" in log


def test_view_rule_on_mmf_visual_bert(tmp_path):
    """The rule's claims on MMF's real VisualBERT (eval mode, random tiny weights):
    the text view equals ``drop`` (no region at all); neither view reads the removed content;
    the image view is the same for every text (vqa pooling included)."""
    script = f"""
import torch
from omegaconf import OmegaConf
from mmf.common.registry import registry
from mmf.common.sample import SampleList
from mmf.utils.env import setup_imports
setup_imports()
from benchmark.mmf_plugin.teachers import raw_forward
from benchmark.mmf_plugin.views import view_sample_list
torch.manual_seed(0)
for pooler in ("default", "vqa"):
    cfg = OmegaConf.create({{**{TINY_BERT!r}, "model": "visual_bert", "training_head_type": "classification",
        "visual_embedding_dim": 8, "embedding_strategy": "plain", "bypass_transformer": False,
        "output_attentions": False, "output_hidden_states": False, "random_initialize": False,
        "num_labels": 3, "pooler_strategy": pooler, "zerobias": False, "finetune_lr_multiplier": 1}})
    model = registry.get_model_class("visual_bert")(cfg)
    model.build()
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 102, 0, 0]])
    def sample_list(**fields):  # VisualBERT reads image_info_0 by attribute, as from MMF's collate
        out = SampleList()
        for key, value in fields.items():
            out[key] = value
        return out
    def batch(ids, feats, n):
        return sample_list(input_ids=ids, input_mask=(ids != 0).long(), segment_ids=torch.zeros_like(ids),
                           image_feature_0=feats, image_info_0=sample_list(max_features=torch.tensor(n)))
    def replace(s, **fields):
        return sample_list(**{{**s, **fields}})
    a = batch(ids, torch.randn(2, 4, 8), [4, 2])
    b = batch(torch.tensor([[101, 3000, 3001, 3002, 102], [101, 102, 0, 0, 0]]), torch.randn(2, 4, 8), [1, 3])
    run = lambda s, v: raw_forward(model, view_sample_list(s, v))["scores"]
    with torch.no_grad():
        drop = raw_forward(model, batch(ids, torch.zeros(2, 0, 8), [0, 0]))["scores"]
        assert torch.allclose(run(a, "text"), drop, atol=1e-5), (pooler, run(a, "text"), drop)
        c = replace(a, image_feature_0=torch.randn(2, 4, 8), image_info_0=sample_list(max_features=torch.tensor([3, 3])))
        assert torch.allclose(run(a, "text"), run(c, "text"), atol=1e-6)
        d = replace(b, image_feature_0=a["image_feature_0"], image_info_0=a["image_info_0"])
        assert torch.allclose(run(a, "image"), run(d, "image"), atol=1e-6)
        assert not torch.allclose(run(a, "multi"), run(d, "multi"), atol=1e-4)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-4000:]
