"""Test-time perturbations (benchmark/train/perturb.py), checked by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.train.perturb import (
    PerturbContext,
    PerturbedLoader,
    TextSpecials,
    get_perturbation,
    input_std,
    load_spec,
    parse_perturb_arg,
    perturbation_from_arg,
    perturbation_names,
    register_perturbation,
)

CLS, SEP, PAD, UNK = 101, 102, 0, 100
SPECIALS = TextSpecials(cls_id=CLS, sep_id=SEP, pad_id=PAD, unk_id=UNK)


def feature_batch(n_samples=2, regions=4, dim=3, real=(4, 2), start=0):
    torch.manual_seed(0)
    x = torch.randn(n_samples, regions, dim)
    for i, r in enumerate(real):
        x[i, r:] = 0.0  # padded regions are zeros, as pad_features writes them
    return {"image_feature_0": x, "image_info_0": {"max_features": torch.tensor(real)},
            "sample_index": torch.arange(start, start + n_samples), "input_ids": torch.zeros(n_samples, 4).long()}


def text_batch(rows, length=8, start=0):
    ids = torch.full((len(rows), length), PAD)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "input_mask": mask, "segment_ids": torch.zeros_like(ids),
            "sample_index": torch.arange(start, start + len(rows))}


# -- registry and bad input -------------------------------------------------------------------
def test_registered_names_and_clear_errors():
    assert {"image_noise", "text_dropout"} <= set(perturbation_names())
    with pytest.raises(ConfigError, match="Unknown perturbation 'gaussian'.*image_noise"):
        get_perturbation("gaussian", 0.5)
    for name, level, match in [("image_noise", -0.1, "sigma -0.1 is out of range"),
                               ("image_noise", math.nan, "out of range"), ("image_noise", math.inf, "out of range"),
                               ("text_dropout", 1.5, r"rate 1.5 is out of range; it must be \[0, 1\]"),
                               ("text_dropout", "much", "not a number")]:
        with pytest.raises(ConfigError, match=match):
            get_perturbation(name, level)
    with pytest.raises(ConfigError, match="unknown option"):
        get_perturbation("image_noise", 1, token="unk")
    with pytest.raises(ConfigError, match="std='per_pixel' is not one of per_dimension, global"):
        get_perturbation("image_noise", 1, std="per_pixel")
    with pytest.raises(ValueError, match="already registered"):
        register_perturbation("image_noise")(type("Other", (get_perturbation("image_noise", 0).__class__,), {}))


def test_perturb_argument():
    assert parse_perturb_arg("image_noise:0.5") == ("image_noise", 0.5)
    with pytest.raises(ConfigError, match="expected <name>:<level>"):
        parse_perturb_arg("image_noise")
    with pytest.raises(ConfigError, match="not a number"):
        parse_perturb_arg("text_dropout:lots")
    p = perturbation_from_arg("text_dropout:0.25")
    assert p.level == 0.25 and p.chosen == {"token": "unk"} and p.tag == "text_dropout-0.25"


# -- image noise --------------------------------------------------------------------------------
def test_level_zero_is_the_identity():
    batch = feature_batch()
    context = PerturbContext(feature_std=torch.ones(3), specials=SPECIALS)
    assert get_perturbation("image_noise", 0).perturb(batch, 0, context) is batch
    text = text_batch([[CLS, 5, 6, SEP]])
    assert get_perturbation("text_dropout", 0).perturb(text, 0, context) is text


def test_noise_scale_is_sigma_times_the_std_per_dimension():
    std = torch.tensor([1.0, 2.0, 0.5])
    batch = feature_batch(n_samples=1, regions=4000, dim=3, real=(4000,))
    out = get_perturbation("image_noise", 0.5).perturb(batch, seed=3, context=PerturbContext(feature_std=std))
    noise = out["image_feature_0"] - batch["image_feature_0"]
    realised = noise[0].std(0)
    # sigma * std = 0.5, 1.0, 0.25; the std of 4000 normal draws is within ~2.2% (1 s.e.) of it.
    assert torch.allclose(realised, 0.5 * std, rtol=0.06)
    assert batch["image_feature_0"].abs().sum() > 0 and out is not batch  # the input is not modified


def test_padding_untouched_and_common_random_numbers():
    batch = feature_batch(real=(4, 2))
    context = PerturbContext(feature_std=torch.tensor([1.0, 2.0, 3.0]))
    one = get_perturbation("image_noise", 1.0).perturb(batch, 7, context)["image_feature_0"]
    two = get_perturbation("image_noise", 2.0).perturb(batch, 7, context)["image_feature_0"]
    x = batch["image_feature_0"]
    assert torch.equal(one[1, 2:], x[1, 2:]) and torch.equal(two[1, 2:], x[1, 2:])  # padded regions
    assert (one[1, :2] != x[1, :2]).all()
    assert torch.allclose(two - x, 2 * (one - x), atol=1e-6)  # the same z at every sigma


def test_noise_is_seeded_per_sample_not_per_batch():
    context = PerturbContext(feature_std=torch.ones(3))
    p = get_perturbation("image_noise", 1.0)
    pair = feature_batch(n_samples=2, real=(4, 4))
    both = p.perturb(pair, 0, context)["image_feature_0"]
    assert torch.equal(both, p.perturb(pair, 0, context)["image_feature_0"])  # same seed, same batch
    alone = {**pair, "image_feature_0": pair["image_feature_0"][1:], "image_info_0": {"max_features": torch.tensor([4])},
             "sample_index": pair["sample_index"][1:]}
    assert torch.equal(p.perturb(alone, 0, context)["image_feature_0"][0], both[1])  # batch size does not matter
    assert not torch.equal(p.perturb(pair, 1, context)["image_feature_0"], both)  # another seed


def test_pixel_noise_per_channel():
    x = torch.zeros(1, 3, 40, 40)
    batch = {"image": x, "sample_index": torch.tensor([0])}
    std = torch.tensor([1.0, 0.1, 3.0])
    out = get_perturbation("image_noise", 1.0).perturb(batch, 0, PerturbContext(feature_std=std))["image"]
    assert torch.allclose(out[0].reshape(3, -1).std(1), std, rtol=0.08)


def test_input_std_by_hand():
    # Two samples, real rows only: sample 0 rows (1, 10), (3, 10); sample 1 row (5, 40) and a padded row.
    samples = [
        {"image_feature_0": torch.tensor([[1.0, 10.0], [3.0, 10.0]]), "image_info_0": {"max_features": 2}},
        {"image_feature_0": torch.tensor([[5.0, 40.0], [99.0, 99.0]]), "image_info_0": {"max_features": 1}},
    ]
    # dim 0: values 1, 3, 5 -> mean 3, sample var (4 + 0 + 4) / 2 = 4 -> std 2
    # dim 1: values 10, 10, 40 -> mean 20, sample var (100 + 100 + 400) / 2 = 300 -> std sqrt(300)
    assert torch.allclose(input_std(samples, "per_dimension"), torch.tensor([2.0, math.sqrt(300.0)]))
    # global: 1, 3, 5, 10, 10, 40 -> mean 11.5, squared deviations 110.25 + 72.25 + 42.25 + 2.25 + 2.25
    # + 812.25 = 1041.5, / 5
    assert torch.isclose(input_std(samples, "global"), torch.tensor(math.sqrt(1041.5 / 5)))
    for few in (samples[1:], []):  # one real row per dimension, or nothing
        with pytest.raises(ConfigError, match="fewer than two"):
            input_std(few, "per_dimension")


# -- text dropout -------------------------------------------------------------------------------
def test_dropout_rate_realised_and_specials_kept():
    words = list(range(1000, 3000))  # 2000 real tokens
    batch = text_batch([[CLS, *words, SEP]], length=2010)
    context = PerturbContext(specials=SPECIALS)
    out = get_perturbation("text_dropout", 0.25).perturb(batch, 0, context)
    ids = out["input_ids"][0]
    assert ids[0] == CLS and ids[2001] == SEP and (ids[2002:] == PAD).all()
    rate = float((ids[1:2001] == UNK).float().mean())
    # Binomial(2000, 0.25): standard error 0.0097; 4 of them.
    assert abs(rate - 0.25) < 0.039
    assert torch.equal(out["input_mask"], batch["input_mask"])  # [UNK]: length unchanged


def test_higher_rates_drop_supersets():
    batch = text_batch([[CLS, *range(1000, 1100), SEP]], length=110)
    context = PerturbContext(specials=SPECIALS)
    low = get_perturbation("text_dropout", 0.1).perturb(batch, 4, context)["input_ids"] == UNK
    high = get_perturbation("text_dropout", 0.5).perturb(batch, 4, context)["input_ids"] == UNK
    assert low.sum() < high.sum() and not (low & ~high).any()


def test_rate_one_by_hand_unk_and_remove():
    batch = text_batch([[CLS, 7, 8, 9, SEP], [CLS, 5, SEP]], length=6)
    batch["segment_ids"][0, :5] = torch.tensor([0, 0, 1, 1, 1])
    context = PerturbContext(specials=SPECIALS)
    unk = get_perturbation("text_dropout", 1.0).perturb(batch, 0, context)
    assert unk["input_ids"].tolist() == [[CLS, UNK, UNK, UNK, SEP, PAD], [CLS, UNK, SEP, PAD, PAD, PAD]]
    removed = get_perturbation("text_dropout", 1.0, token="remove").perturb(batch, 0, context)
    assert removed["input_ids"].tolist() == [[CLS, SEP, PAD, PAD, PAD, PAD], [CLS, SEP, PAD, PAD, PAD, PAD]]
    assert removed["input_mask"].tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    assert removed["segment_ids"].tolist() == [[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]


def test_remove_keeps_the_order_of_what_is_left():
    row = [CLS, *range(200, 240), SEP]
    batch = text_batch([row], length=50)
    context = PerturbContext(specials=SPECIALS)
    p = get_perturbation("text_dropout", 0.3, token="remove")
    drop = p.dropped(batch["input_ids"], batch["input_mask"], [0], 0, SPECIALS)[0]
    expected = [t for t, d in zip(row, drop.tolist()) if not d]
    out = p.perturb(batch, 0, context)
    k = len(expected)
    assert out["input_ids"][0, :k].tolist() == expected and (out["input_ids"][0, k:] == PAD).all()
    assert out["input_mask"][0].tolist() == [1] * k + [0] * (50 - k)
    assert 0 < drop.sum() < 40


def test_perturbed_loader_applies_to_every_batch():
    batches = [text_batch([[CLS, 5, 6, SEP]], start=i) for i in range(3)]
    loader = PerturbedLoader(batches, get_perturbation("text_dropout", 1.0), 0, PerturbContext(specials=SPECIALS))
    assert len(loader) == 3 and all((b["input_ids"][0, 1:3] == UNK).all() for b in loader)


# -- the spec -----------------------------------------------------------------------------------
def test_spec_defaults_and_overrides(tmp_path):
    spec = load_spec()
    assert spec.levels("image_noise") == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert spec.levels("text_dropout") == [0.0, 0.1, 0.25, 0.5]
    assert spec.options("image_noise") == {"std": "per_dimension"} and spec.options("text_dropout") == {"token": "unk"}
    assert spec.audc_normalisation == "span" and spec.views == ("multi",)
    assert load_spec(overrides=["audc.normalisation=relative"]).eval_name == spec.eval_name  # analysis only
    assert load_spec(overrides=["seed=1"]).eval_name != spec.eval_name
    assert load_spec(overrides=["perturbations.text_dropout.token=remove"]).eval_name != spec.eval_name


@pytest.mark.parametrize("override, match", [
    ("perturbations.image_noise.levels=[0, 1, 1]", "strictly increasing"),
    ("perturbations.image_noise.levels=[0]", "at least two levels"),
    ("perturbations.text_dropout.levels=[0, 2]", "out of range"),
    ("perturbations.blur.levels=[0, 1]", "Unknown perturbation 'blur'"),
    ("audc.normalisation=area", "audc.normalisation='area'"),
    ("sed=1", "Robustness override 'sed=1'"),
    ("views=[multi, audio]", "views .* unknown"),
])
def test_bad_specs_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        load_spec(overrides=[override])


def test_every_spec_key_is_documented():
    from pathlib import Path

    from omegaconf import OmegaConf

    from benchmark.train.perturb import SPEC_FILE

    def leaves(node, prefix=""):  # dotted keys of the values (a list of levels is one value)
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    text = (Path(__file__).resolve().parents[2] / "docs" / "assumptions.md").read_text()
    keys = list(leaves(OmegaConf.to_container(OmegaConf.load(SPEC_FILE))))
    assert "perturbations.image_noise.std" in keys and "audc.normalisation" in keys
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"document these robustness keys in docs/assumptions.md: {missing}"


def test_replayable_keeps_batches_only_when_reused_and_small():
    from benchmark.train.rescore import replayable

    batches = [{"x": torch.zeros(4, 8), "meta": {"y": torch.ones(4)}, "id": ["a"] * 4} for _ in range(3)]

    class Loader(list):  # a re-iterable loader with a length, counting its passes
        passes = 0

        def __iter__(self):
            Loader.passes += 1
            return super().__iter__()

    loader = Loader(batches)
    assert replayable(loader, uses=1) is loader  # read once: nothing kept
    kept = replayable(loader, uses=3)
    assert type(kept) is list and len(kept) == 3 and all(a is b for a, b in zip(kept, batches))
    # 4*8*4 + 4*4 = 144 bytes a batch, 432 for three: over a 400-byte budget the loader itself is used.
    assert replayable(loader, uses=3, budget=400) is loader and replayable(loader, uses=3, budget=432) is not loader
