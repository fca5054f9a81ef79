"""Metrics: hand-computed examples and agreement with scikit-learn (MMF's own backend)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from benchmark.errors import ConfigError
from benchmark.registry import registry
from benchmark.train import metrics as M

SEEDS = range(40)


# -- hand-computed examples --------------------------------------------------------------------
def test_accuracy_hand():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.5, 0.2]])
    targets = torch.tensor([0, 1, 1, 0])
    # argmax = [0, 1, 0, 0] vs [0, 1, 1, 0]: 3 of 4 correct
    assert M.accuracy(logits, targets, "single_label") == pytest.approx(0.75)


def test_accuracy_reduces_2d_targets_to_their_top1_class_like_mmf():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0], [0.0, 1.0, 0.0]])
    # one-hot, soft scores and a single-positive row: each has one largest value, so topk is unambiguous
    targets = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.3, 0.9], [0.0, 0.0, 1.0], [0.6, 0.0, 0.3]])
    # top-1 targets [1, 2, 2, 0]; top-1 logits [1, 0, 2, 1] -> rows 0 and 2 correct
    assert M.accuracy(logits, targets, "multi_label") == pytest.approx(2 / 4)


def _one_hot_logits(classes: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float() * 3.0


def test_accuracy_on_tied_multi_hot_targets_scores_the_positive_topk_picks():
    # MM-IMDb rows list several genres: the positives tie. MMF's rule scores the one positive that
    # torch.topk picks, which is neither "any positive" nor necessarily the first (argmax's choice).
    row = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    pick = int(row.topk(1, dim=1).indices)
    assert pick in (0, 3)
    other = 3 - pick
    targets = row.repeat(4, 1)
    # predictions: the picked genre, the other listed genre, an unlisted one, the picked one again -> 2 of 4
    logits = _one_hot_logits([pick, other, 1, pick], 4)
    assert M.accuracy(logits, targets, "multi_label") == pytest.approx(2 / 4)
    # and the same rule on tied logits: the prediction is topk's choice among the tied classes
    tied = torch.tensor([[2.0, 0.0, 0.0, 2.0]])
    assert M.accuracy(tied, torch.tensor([pick]), "single_label") == 1.0
    assert M.accuracy(tied, torch.tensor([other]), "single_label") == 0.0


def test_accuracy_column_targets_are_squeezed_not_broadcast():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    targets = torch.tensor([[0], [1], [1]])
    # predictions [0, 1, 0] vs [0, 1, 1]: 2/3 (MMF's [N,1]==[N] broadcast would count 5/3)
    assert M.accuracy(logits, targets, "single_label") == pytest.approx(2 / 3)


def test_binary_f1_hand():
    # argmax predictions [1, 1, 0, 0, 1], gold [1, 0, 1, 0, 1]
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([1, 0, 1, 0, 1])
    # tp = 2, fp = 1, fn = 1 -> F1 = 2*2 / (2*2 + 1 + 1) = 4/6
    assert M.binary_f1(logits, targets, "single_label") == pytest.approx(2 / 3)


def test_binary_f1_without_positives_is_zero_like_sklearn_default():
    logits = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([0, 0])
    assert M.binary_f1(logits, targets, "single_label") == 0.0


def test_roc_auc_hand():
    # logits [0, x]: softmax[:, 1] = sigmoid(x), monotone in x
    x = torch.tensor([-2.0, -1.0, 1.0, 0.5, 3.0])
    labels = torch.tensor([0, 1, 0, 1, 1])
    logits = torch.stack([torch.zeros(5), x], dim=1)
    # positives {-1, 0.5, 3}, negatives {-2, 1}: ordered pairs won = (-1>-2) (0.5>-2) (3>-2) (3>1) = 4 of 6
    assert M.roc_auc(logits, labels, "single_label") == pytest.approx(4 / 6)


def test_roc_auc_ties_count_half():
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    # pos 0 vs neg 0 tie -> 1/2; pos 1 vs neg 0 -> 1; AUC = (0.5 + 1) / 2
    assert M.roc_auc(logits, labels, "single_label") == pytest.approx(0.75)


def test_roc_auc_single_class_is_nan():
    logits = torch.randn(6, 2)
    assert math.isnan(M.roc_auc(logits, torch.ones(6, dtype=torch.long), "single_label"))
    assert math.isnan(M.roc_auc(logits, torch.zeros(6, dtype=torch.long), "single_label"))


def test_roc_auc_one_column_uses_sigmoid():
    logits = torch.tensor([[-1.0], [2.0], [0.5]])
    labels = torch.tensor([0, 1, 0])
    # positive 2 outranks both negatives -> 1.0 (a softmax over one column would give 0.5)
    assert M.roc_auc(logits, labels, "single_label") == pytest.approx(1.0)


def _multilabel_example() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor(
        [[-3.0, 2.0, -1.0, 0.0], [-2.0, 1.0, 1.0, -1.0], [-4.0, -1.0, 2.0, 3.0]]
    )  # round(sigmoid): [[0,1,0,0], [0,1,1,0], [0,0,1,1]]; logit 0 -> 0.5 -> rounds to 0
    targets = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    return logits, targets


def test_multilabel_f1_hand_with_unk_column():
    logits, targets = _multilabel_example()
    # column 0 (<unk>): tp=fp=fn=0 -> F1 0 (kept, as MMF/sklearn do)
    # column 1: pred [1,1,0] gold [1,0,1]: tp1 fp1 fn1 -> 2/4 = 0.5
    # column 2: pred [0,1,1] gold [0,1,1]: tp2 -> 1.0
    # column 3: pred [0,0,1] gold [1,0,1]: tp1 fn1 -> 2/3
    # macro = (0 + 1/2 + 1 + 2/3) / 4 = 13/24
    assert M.multilabel_macro_f1(logits, targets, "multi_label") == pytest.approx(13 / 24)
    # micro: TP = 4, FP = 1, FN = 2 -> 8 / (8 + 1 + 2)
    assert M.multilabel_micro_f1(logits, targets, "multi_label") == pytest.approx(8 / 11)


def test_multilabel_f1_rejects_soft_targets():
    with pytest.raises(ValueError, match="0/1"):
        M.multilabel_micro_f1(torch.zeros(2, 3), torch.full((2, 3), 0.3), "soft_score")


def test_vqa_accuracy_masks_unk():
    logits = torch.tensor(
        [
            [5.0, 1.0, 2.0, 0.0],  # unmasked argmax is <unk> (0); masked argmax is 2
            [0.0, 3.0, 1.0, 2.0],  # argmax 1
            [0.0, -1.0, -1.0, 2.0],  # argmax 3
        ]
    )
    targets = torch.tensor([[0.0, 0.3, 0.6, 1.0], [0.0, 1.0, 0.0, 0.3], [0.0, 0.0, 0.9, 0.0]])
    # scores of chosen answers: 0.6 + 1.0 + 0.0 = 1.6, over N = 3
    assert M.vqa_accuracy(logits, targets, "soft_score") == pytest.approx(1.6 / 3)
    # without the mask row 0 would score targets[0, 0] = 0 -> 1.0 / 3: the mask matters here
    assert M.vqa_accuracy(logits, targets, "soft_score") != pytest.approx(1.0 / 3)


def test_vqa_accuracy_matches_mmf_masked_softmax_reference():
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(32, 12, generator=g) * 3
        logits[:, 0] += 2.0  # make <unk> often the unmasked winner
        targets = torch.rand(32, 12, generator=g).round() * torch.rand(32, 12, generator=g)
        probs = torch.softmax(logits, dim=1)
        probs[:, 0] = 0
        probs = probs / probs.sum(dim=1, keepdim=True)
        pick = probs.argmax(dim=1)
        expected = float(targets[torch.arange(32), pick].sum() / 32)
        assert M.vqa_accuracy(logits, targets, "soft_score") == pytest.approx(expected, abs=1e-6)


# -- against scikit-learn on random data ---------------------------------------------------------
@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_accuracy_and_binary_f1_match_sklearn(num_classes):
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(50, num_classes, generator=g)
        targets = torch.randint(0, num_classes, (50,), generator=g)
        pred = logits.argmax(1).numpy()
        assert M.accuracy(logits, targets, "single_label") == pytest.approx(accuracy_score(targets, pred))
        if num_classes == 2:  # MMF's BinaryF1 call
            sk = f1_score(targets.numpy(), pred, average="binary", zero_division=0)
        else:  # sklearn's binary average refuses 3+ classes; ours scores class 1 against the rest
            sk = f1_score(targets.numpy(), pred, average="micro", labels=[1], zero_division=0)
        assert M.binary_f1(logits, targets, "single_label") == pytest.approx(sk)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_roc_auc_matches_sklearn_mmf_pipeline(num_classes):
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        logits = (torch.randn(60, num_classes, generator=g) * 2).round()  # rounding creates ties
        targets = torch.arange(60) % num_classes  # every class present
        targets = targets[torch.randperm(60, generator=g)]
        probs = torch.softmax(logits, dim=1).numpy()
        one_hot = np.eye(num_classes)[targets.numpy()]
        expected = roc_auc_score(one_hot, probs)  # MMF: softmax, one-hot, macro
        assert M.roc_auc(logits, targets, "single_label") == pytest.approx(expected, abs=1e-12)
        if num_classes == 2:
            assert M.roc_auc(logits, targets, "single_label") == pytest.approx(
                roc_auc_score(targets.numpy(), probs[:, 1]), abs=1e-9
            )


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_multilabel_f1_matches_sklearn(average):
    fn = M.multilabel_micro_f1 if average == "micro" else M.multilabel_macro_f1
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(40, 8, generator=g) * 2
        logits[:3] = 0.0  # sigmoid exactly 0.5 -> round half to even -> 0
        targets = (torch.rand(40, 8, generator=g) < 0.3).float()
        targets[:, 0] = 0  # <unk> never positive
        targets[:, 5] = 0  # a label with no positives at all
        pred = torch.round(torch.sigmoid(logits)).numpy()
        expected = f1_score(targets.numpy(), pred, average=average, zero_division=0)
        assert fn(logits, targets, "multi_label") == pytest.approx(expected, abs=1e-12)


# -- errors, keys, directions --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(M.METRIC_DIRECTION))
def test_empty_input_raises(name):
    fn = registry.get_metric(name)
    with pytest.raises(ValueError, match="empty"):
        fn(torch.zeros(0, 3), torch.zeros(0, 3), "soft_score")


def test_bad_shapes_and_task_raise():
    with pytest.raises(ValueError, match="first dimension"):
        M.accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), "single_label")
    with pytest.raises(ValueError, match="task"):
        M.accuracy(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), "regression")
    with pytest.raises(ValueError, match="soft scores"):
        M.vqa_accuracy(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), "soft_score")


def test_registered_names():
    assert set(M.METRIC_DIRECTION) <= set(registry.names("metric"))
    assert registry.get_metric("vqa_accuracy") is M.vqa_accuracy


def test_compute_metrics_keys_and_values():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    targets = torch.tensor([1, 0, 0, 1])
    multi = M.compute_metrics(
        ["accuracy", "roc_auc"], logits, targets, "single_label", "val/hateful_memes", "multi"
    )
    assert multi == {
        "val/hateful_memes/accuracy": pytest.approx(0.5),
        # positives p1 = {s(1), s(-3)}, negatives {s(-1), s(2)}: wins (1>-1) only -> 1/4
        "val/hateful_memes/roc_auc": pytest.approx(0.25),
    }
    image = M.compute_metrics(["accuracy"], logits, targets, "single_label", "val/hateful_memes", "image")
    assert list(image) == ["val/hateful_memes/accuracy@image"]
    with pytest.raises(ValueError, match="view"):
        M.compute_metrics(["accuracy"], logits, targets, "single_label", "val/hateful_memes", "audio")
    with pytest.raises(ConfigError, match="Unknown metric"):
        M.compute_metrics(["auroc"], logits, targets, "single_label", "val/hateful_memes", "multi")


def test_metric_direction_and_headline():
    assert M.metric_direction("roc_auc") == "max"
    assert M.metric_direction("val/mmimdb/multilabel_micro_f1@text") == "max"
    assert M.metric_direction("loss/total") == "min"
    assert M.metric_direction("val/vqa2/logit_bce") == "min"
    with pytest.raises(ConfigError):
        M.metric_direction("val/hateful_memes/bleu")
    assert M.headline_metric("mmimdb") == "multilabel_micro_f1"
    assert M.headline_metric("easy_vqa") == "vqa_accuracy"
    for dataset in registry.names("dataset"):  # read from each dataset's YAML: the headline is reported first
        headline, reported = M.dataset_metrics(dataset)
        assert reported[0] == headline
        assert all(name in registry.names("metric") for name in reported)
    with pytest.raises(ConfigError, match="coco"):
        M.headline_metric("coco")
