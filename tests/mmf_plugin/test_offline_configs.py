"""The shipped offline configs (benchmark/mmf_plugin/configs/offline) agree with the suite:
MMF tokenizes with the suite's max_seq_length and vocabulary, and its label count is the
synthetic data's. Runs without MMF; the ``mmf`` tests train through these same files."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchmark.config.loader import build_config, dataset_node
from benchmark.data.make import make_dataset
from benchmark.mmf_plugin import CONFIG_DIR
from benchmark.mmf_plugin.offline import FOLDER, main, write_tokenizer

OFFLINE = CONFIG_DIR / "offline"
DATASETS = ("hateful_memes", "mmimdb", "visual_entailment", "vqa2")
LABEL_FILES = {"mmimdb": "mmimdb/defaults/extras/classes_mm_imdb.txt",
               "vqa2": "vqa2/defaults/extras/vocabs/answers_vqa.txt"}


@pytest.mark.parametrize("name", DATASETS)
def test_offline_data_overlay_matches_the_suite_and_the_data(name, tmp_path):
    overlay = OmegaConf.load(OFFLINE / name / "data.yaml")
    params = overlay.dataset_config[name].processors.text_processor.params
    suite = dataset_node(build_config([f"dataset={name}"])).processors.text_processor.params
    assert params.max_seq_length == suite.max_seq_length
    assert OmegaConf.to_container(params.tokenizer_config)["type"] == "${env.data_dir}/" + FOLDER
    if name in LABEL_FILES:  # MMF's answer/genre vocabulary adds <unk> when the file has none
        make_dataset(name, tmp_path, size=16, seed=0)
        words = [w.strip() for w in (tmp_path / "datasets" / LABEL_FILES[name]).read_text().splitlines() if w.strip()]
        assert overlay.model_config.visual_bert.num_labels == len(words) + (0 if "<unk>" in words else 1)
    for role in ("teacher", "student"):
        includes = OmegaConf.load(OFFLINE / name / f"{role}.yaml").includes
        local = [i for i in includes if not i.startswith(("configs/", "projects/"))]  # MMF's own root
        assert local and all((OFFLINE / name / i).is_file() for i in local), (role, includes)


def test_tokenizer_folder_loads_offline_and_matches_the_suite_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    assert main([str(tmp_path)]) == 0
    folder = tmp_path / FOLDER
    assert folder == write_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    vocab = Path(folder / "vocab.txt").read_text().splitlines()
    ids = tokenizer("a photo of a dog")["input_ids"]
    assert ids[0] == vocab.index("[CLS]") and ids[-1] == vocab.index("[SEP]")
    assert [vocab[i] for i in ids[1:-1]] == ["a", "photo", "of", "a", "dog"]
