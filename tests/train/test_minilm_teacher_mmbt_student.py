"""The paper's pairing on the CPU: a VisualBERT teacher initialised from pretrained BERT
weights (the packaged MiniLM-L6 stands in for bert-base-uncased) distilled into an MMBT
student of another architecture, through the teacher cache."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.config.loader import build_config
from benchmark.data.make import make_dataset
from benchmark.models.pretrained import load_bert
from benchmark.train.trainer import run_experiment


@pytest.mark.slow  # 1-1.5 min on 2 cores: two real-weight runs and a cache (make test-all)
def test_minilm_visual_bert_teacher_distils_into_an_mmbt_student_through_the_cache(tmp_path):
    make_dataset("hateful_memes", tmp_path / "data", size=64, seed=0)
    common = [f"env.data_dir={tmp_path / 'data'}", f"env.save_dir={tmp_path / 'runs'}", f"env.cache_dir={tmp_path / 'cache'}",
              "dataset=hateful_memes", "tracking.wandb.mode=disabled", "training.max_updates=2", "training.batch_size=16",
              "distill.cache_spot_check=2"]
    teacher = run_experiment(build_config([*common, "model=visual_bert", "method=teacher",
                                           "model_config.visual_bert.bert_model_name=minilm"]), progress=False)
    assert teacher.summary["status"] == "completed"
    checkpoint = torch.load(teacher.run_dir.file("checkpoint.pt"), weights_only=False)["model"]
    minilm = load_bert("minilm").state_dict()
    embeddings = next(k for k in checkpoint if k.endswith("embeddings.word_embeddings.weight"))
    assert checkpoint[embeddings].shape == minilm["embeddings.word_embeddings.weight"].shape  # MiniLM's 384 wide

    student = run_experiment(build_config([*common, "model=mmbt", "method=msd", "weighting=instance",
                                           f"teacher={teacher.run_id}"]), progress=False)
    details = student.summary["method_details"]
    assert student.summary["status"] == "completed" and student.summary["model"] == "mmbt"
    assert details["teacher_run"] == teacher.run_id and details["teacher_source"] == "cache"
    meta = json.loads((tmp_path / "cache" / "teacher" / details["teacher_cache"].rsplit("/", 1)[-1] / "meta.json").read_text())
    assert meta["inputs"]["teacher_run"] == teacher.run_id
    assert student.summary["model_params"] < teacher.summary["model_params"] / 5
