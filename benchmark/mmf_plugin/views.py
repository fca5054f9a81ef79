"""The view rule for MMF inputs: a ``SampleList`` with one modality removed (docs/protocol.md §3.5).

Why a rule of its own: the suite's models remove a modality *inside* the model (``drop``
builds the sequence without its tokens), but an arbitrary registered MMF model only accepts a
``SampleList``. So the MMF student's views are made by editing its *inputs*, with edits that
every MMF model reads the same way and that leave no trace of the removed content or of its
length:

* **text removed** (the ``image`` view): the sample's text becomes the *empty string* as
  MMF's ``bert_tokenizer`` encodes it, ``[CLS] [SEP]`` followed by padding: ``input_ids``
  ``= [CLS, SEP, 0, …]``, ``input_mask = [1, 1, 0, …]``, ``segment_ids = 0``,
  ``lm_label_ids = -1`` and ``text = ""``. ``[CLS]`` and ``[SEP]`` are read from the batch
  (position 0 and the last real position), so the rule follows the tokenizer in use.
  Keeping both tokens, rather than ``[CLS]`` alone, is deliberate:

  - an all-masked row would make BERT attend *uniformly over every position*, masked text
    included (every score gets the same large negative bias), so some real key must stay;
  - VisualBERT's ``pooler_strategy: vqa`` pools position ``input_mask.sum() - 2`` and MMBT
    reads its modal end token at ``input_mask.sum() - 1``: with two real tokens both stay
    in range and land on ``[CLS]``/``[SEP]``; with one they would index -1;
  - ``[SEP]`` sits at position 1 for every sample, so the text's length is not revealed.

* **image removed** (the ``text`` view): every ``image_feature_<k>`` is zeroed, and
  ``image_info_<k>.max_features`` is set to 0 (created when the dataset does not return
  ``image_info``) with ``bbox`` zeroed, so models that mask regions by ``max_features``
  (VisualBERT) attend to none of them; raw images (``image``) are zeroed.

What this is and is not equivalent to, against the suite's default ``views.removal: drop``:

* VisualBERT, text view: *identical* to ``drop``. Masked keys get weight exp(-huge) = 0, so
  ``[CLS]`` sees exactly the text tokens.
* VisualBERT, image view: ``[CLS] [SEP] + regions``, where the suite's ``drop`` has
  ``[CLS] + regions``: one extra *constant* token, no content.
* Models that ignore ``max_features`` (MMBT with an ``identity`` modal encoder, late fusion
  over features, any raw-image encoder) still see the zeroed rows or image: for them the
  text view is the suite's ``zero`` rule (zeros of the padded length) rather than ``drop``.
* Fields a model may read that the rule does not know (a second text field, OCR tokens,
  ``image_text_alignment``) are left as they are; such a model needs its own rule.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, TypeVar

import torch

from benchmark import VIEWS

S = TypeVar("S", bound=MutableMapping[str, Any])

TEXT_KEYS = ("input_ids", "input_mask", "segment_ids", "lm_label_ids", "text")


def check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")


def _copy(mapping: S) -> S:
    """A shallow copy of the same type (MMF's ``SampleList.copy`` or ``dict.copy``).

    The edits below replace values, never write into the shared tensors, so the original
    sample list (which the loss and the metrics read afterwards) is left untouched.
    """
    return mapping.copy()  # type: ignore[return-value]


def empty_text(sample_list: S) -> S:
    """The ``image`` view: the text replaced by the encoded empty string ``[CLS] [SEP]``."""
    out = _copy(sample_list)
    if "input_ids" not in out:
        return out
    ids: torch.Tensor = out["input_ids"]
    size, length = ids.shape[0], ids.shape[-1]
    mask = out.get("input_mask")
    real = mask.long().sum(-1) if mask is not None else torch.full((size,), length, device=ids.device)
    last = (real - 1).clamp(min=0).reshape(size, 1)
    new_ids = torch.zeros_like(ids)
    new_ids[:, 0] = ids[:, 0]
    if length > 1:
        new_ids[:, 1] = ids.gather(1, last)[:, 0]
    out["input_ids"] = new_ids
    keep = min(2, length)
    if mask is not None:
        new_mask = torch.zeros_like(mask)
        new_mask[:, :keep] = 1
        out["input_mask"] = new_mask
    if "segment_ids" in out:
        out["segment_ids"] = torch.zeros_like(out["segment_ids"])
    if "lm_label_ids" in out and isinstance(out["lm_label_ids"], torch.Tensor):
        out["lm_label_ids"] = torch.full_like(out["lm_label_ids"], -1)
    if isinstance(out.get("text"), list):
        out["text"] = [""] * len(out["text"])
    return out


def _empty_info(info: Mapping[str, Any] | None, template: Any, size: int, device: torch.device) -> Any:
    """``image_info_<k>`` with no real region: ``max_features = 0``, boxes zeroed."""
    new = info.copy() if info is not None else template
    new["max_features"] = torch.zeros(size, dtype=torch.long, device=device)
    bbox = new.get("bbox")
    if isinstance(bbox, torch.Tensor):
        new["bbox"] = torch.zeros_like(bbox)
    elif isinstance(bbox, list):
        new["bbox"] = [torch.zeros_like(torch.as_tensor(b)) for b in bbox]
    return new


def no_image(sample_list: S) -> S:
    """The ``text`` view: region features and images zeroed, no region left unmasked."""
    out = _copy(sample_list)
    for key in list(out.keys()):
        value = out[key]
        if key == "image" and isinstance(value, torch.Tensor):
            out[key] = torch.zeros_like(value)
        elif key.startswith("image_feature_") and isinstance(value, torch.Tensor):
            out[key] = torch.zeros_like(value)
            info_key = "image_info_" + key[len("image_feature_") :]
            template = type(sample_list)()
            out[info_key] = _empty_info(out.get(info_key), template, value.shape[0], value.device)
    return out


def view_sample_list(sample_list: S, view: str) -> S:
    """The input of ``view``: a shallow copy for ``multi`` (models may add keys to it)."""
    check_view(view)
    if view == "image":
        return empty_text(sample_list)
    if view == "text":
        return no_image(sample_list)
    return _copy(sample_list)
