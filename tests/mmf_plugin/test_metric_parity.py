"""Golden values: the suite's metrics follow MMF's definitions (``mmf/modules/metrics.py``).

Every expected value is worked out by hand from MMF's formulas, never by calling the suite:

* ``roc_auc`` (``ROC_AUC.calculate``): softmax of the logits, targets one-hot encoded,
  ``sklearn.roc_auc_score`` with its default macro average. With two classes both columns
  have the same AUC, so it is the AUC of softmax class 1, i.e. of ``z1 - z0``.
* ``multilabel_micro_f1`` / ``multilabel_macro_f1`` (``MultiLabelF1``): ``round(sigmoid(z))``
  against the multi-hot targets, sklearn F1 over *all* columns (MM-IMDb's ``<unk>`` column 0
  included; a column with no true and no predicted positive scores 0). ``torch.round`` rounds
  half to even, so a logit of exactly 0 predicts 0.
* ``vqa_accuracy`` (``VQAAccuracy``): softmax, column 0 (``<unk>``) set to 0, argmax, and the
  soft score of the chosen answer summed over the batch / N.
* soft scores (``VQAAnswerProcessor.compute_answers_scores``): per answer, the mean over the 10
  annotators of ``min(1, #other annotators giving it / 3)``; ``<unk>`` never gets a score; a
  short answer list is repeated up to 10 (``_increase_to_ten``).
"""

from __future__ import annotations

import pytest
import torch

from benchmark.data.vocab import VocabDict, answer_indices, vqa_answer_scores
from benchmark.train.metrics import multilabel_macro_f1, multilabel_micro_f1, roc_auc, vqa_accuracy


def _binary_logits(diffs: list[float]) -> torch.Tensor:
    """Two-class logits whose softmax class-1 probability is sigmoid(diff), shifted so z0 != 0."""
    d = torch.tensor(diffs)
    return torch.stack([0.7 - d / 2, 0.7 + d / 2], 1)


def test_roc_auc_is_the_auc_of_softmax_class_1():
    # positives have diffs {2, 0, 3}, negatives {-1, 0.5}: pairs ranked right are
    # (2,-1) (2,.5) (0,-1) (3,-1) (3,.5), wrong (0,.5) -> 5/6
    logits = _binary_logits([2.0, -1.0, 0.5, 0.0, 3.0])
    assert roc_auc(logits, torch.tensor([1, 0, 0, 1, 1]), "single_label") == pytest.approx(5 / 6)
    # a tie between a positive and a negative counts one half: pairs (.5,.5)=.5, (.5,-1)=1, (2,.5)=1, (2,-1)=1
    logits = _binary_logits([0.5, 0.5, -1.0, 2.0])
    assert roc_auc(logits, torch.tensor([1, 0, 0, 1]), "single_label") == pytest.approx(3.5 / 4)
    # one-hot targets (MMF converts class indices to one-hot) give the same value
    one_hot = torch.tensor([[0, 1], [1, 0], [1, 0], [0, 1]])
    assert roc_auc(logits, one_hot, "single_label") == pytest.approx(3.5 / 4)


# rows: samples; column 0 plays MM-IMDb's <unk> (never a target, never predicted here)
ML_LOGITS = torch.tensor([[-1.0, 2.0, -3.0, 0.0], [-2.0, -1.0, 1.0, 4.0], [-3.0, -1.0, -1.0, 2.0]])
ML_TARGETS = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
# predictions round(sigmoid): [[0,1,0,0] (logit 0 -> 0.5 -> 0)], [0,0,1,1], [0,0,0,1]
# per class (tp, fp, fn): c0 (0,0,0) F1 0 | c1 (1,0,1) F1 2/3 | c2 (1,0,0) F1 1 | c3 (1,1,1) F1 1/2


def test_multilabel_micro_f1_pools_every_sample_and_class():
    # tp 3, fp 1, fn 2 -> 2*3 / (2*3 + 1 + 2)
    assert multilabel_micro_f1(ML_LOGITS, ML_TARGETS, "multi_label") == pytest.approx(6 / 9)


def test_multilabel_macro_f1_averages_all_columns_unk_included():
    # (0 + 2/3 + 1 + 1/2) / 4: the <unk> column counts, with F1 0
    assert multilabel_macro_f1(ML_LOGITS, ML_TARGETS, "multi_label") == pytest.approx((2 / 3 + 1 + 0.5) / 4)


def test_vqa_accuracy_masks_unk_then_sums_soft_scores():
    logits = torch.tensor([[5.0, 1.0, 2.0, 0.0], [9.0, 0.0, -1.0, -2.0], [0.0, 1.0, 1.0, 3.0]])
    targets = torch.tensor([[0.0, 0.3, 1.0, 0.0], [0.0, 0.6, 0.0, 0.3], [0.0, 1.0, 0.0, 0.0]])
    # chosen answers (<unk> masked): 2 -> 1.0, 1 (not <unk>, though its logit is largest) -> 0.6, 3 -> 0
    assert vqa_accuracy(logits, targets, "soft_score") == pytest.approx((1.0 + 0.6 + 0.0) / 3)


def test_vqa_soft_scores_leave_one_annotator_out():
    # 7x net (1), 1x netting (3), 2x mesh (2)
    indices = [1] * 7 + [3] + [2] * 2
    # net: every annotator sees >= 6 others -> 1; mesh: 2 annotators see 1 (1/3), 8 see 2 (2/3) -> 0.6;
    # netting: 1 annotator sees 0, 9 see 1 (1/3) -> 0.3
    assert vqa_answer_scores(indices, unk_index=0) == pytest.approx({1: 1.0, 2: 0.6, 3: 0.3})
    # answers outside the vocabulary map to <unk>, which is never scored
    assert vqa_answer_scores([0] * 4 + [1] * 6, unk_index=0) == pytest.approx({1: 1.0})


def test_short_answer_lists_are_repeated_to_ten_as_mmf_does():
    vocab = VocabDict(["yes", "no"])  # <unk> prepended at index 0
    indices = answer_indices(["yes", "no", "yes"], vocab)
    # yes,no,yes repeated: yes x7, no x3 -> yes 1.0; no: 3 see 2 others (2/3), 7 see 3 (1) -> 0.9
    assert sorted(indices) == [1] * 7 + [2] * 3
    assert vqa_answer_scores(indices, vocab.unk_index) == pytest.approx({1: 1.0, 2: 0.9})
