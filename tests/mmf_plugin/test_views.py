"""The MMF view rule (:mod:`benchmark.mmf_plugin.views`) on a plain-dict batch."""

from __future__ import annotations

import torch

from benchmark.mmf_plugin.views import view_sample_list


def test_image_view_is_the_encoded_empty_string(tiny_batch):
    view = view_sample_list(tiny_batch, "image")
    assert view["input_ids"].tolist() == [[101, 102, 0, 0, 0, 0]] * 3
    assert view["input_mask"].tolist() == [[1, 1, 0, 0, 0, 0]] * 3
    assert int(view["segment_ids"].abs().sum()) == 0 and view["text"] == ["", "", ""]
    assert view["image_feature_0"] is tiny_batch["image_feature_0"]  # the image is untouched
    assert tiny_batch["input_ids"][2, 3] == 3185  # the original batch is untouched


def test_text_view_has_no_region_left(tiny_batch):
    view = view_sample_list(tiny_batch, "text")
    assert int(view["image_feature_0"].abs().sum()) == 0
    assert view["image_info_0"]["max_features"].tolist() == [0, 0, 0]
    assert int(view["image_info_0"]["bbox"].abs().sum()) == 0
    assert view["input_ids"] is tiny_batch["input_ids"]
    assert tiny_batch["image_info_0"]["max_features"].tolist() == [5, 3, 4]


def test_text_view_creates_image_info_when_the_dataset_returns_none(tiny_batch):
    del tiny_batch["image_info_0"]
    view = view_sample_list(tiny_batch, "text")
    assert view["image_info_0"]["max_features"].tolist() == [0, 0, 0]
    assert "image_info_0" not in tiny_batch


def test_removed_content_and_length_do_not_reach_the_view(tiny_batch):
    other = dict(tiny_batch)
    other["input_ids"] = torch.tensor([[101, 2000, 102, 0, 0, 0], [101, 3000, 3001, 3002, 3003, 102], [101, 102, 0, 0, 0, 0]])
    other["input_mask"] = (other["input_ids"] != 0).long()
    other["image_feature_0"] = torch.randn(3, 5, 8)
    other["image_info_0"] = {"max_features": torch.tensor([1, 2, 5]), "bbox": torch.rand(3, 5, 4)}
    for key in ("input_ids", "input_mask"):
        assert torch.equal(view_sample_list(tiny_batch, "image")[key], view_sample_list(other, "image")[key])
    a, b = view_sample_list(tiny_batch, "text"), view_sample_list(other, "text")
    assert torch.equal(a["image_feature_0"], b["image_feature_0"])
    assert torch.equal(a["image_info_0"]["max_features"], b["image_info_0"]["max_features"])
    multi = view_sample_list(tiny_batch, "multi")
    assert multi is not tiny_batch and multi["input_ids"] is tiny_batch["input_ids"]


def test_suite_batch_pads_mmf_boxes_like_the_features(tiny_batch):
    import numpy as np

    from benchmark.mmf_plugin.teachers import suite_batch

    # MMF collates each image's unpadded boxes into a list of arrays
    tiny_batch["image_info_0"] = {"max_features": [5, 3, 4], "bbox": [np.ones((n, 4), np.float32) for n in (5, 3, 4)]}
    batch = suite_batch(tiny_batch)
    assert batch["image_info_0"]["bbox"].shape == (3, 5, 4)
    assert batch["image_info_0"]["bbox"].sum(dim=(1, 2)).tolist() == [20.0, 12.0, 16.0]
    assert batch["image_info_0"]["max_features"].tolist() == [5, 3, 4] and "text" not in batch
