"""Cutting the batch's shared padding (data.build.collate) changes no model output."""

import pytest
import torch
from torch.utils.data import default_collate

from benchmark import VIEWS
from benchmark.data.build import build_dataset, collate
from benchmark.models.build import build_model


@pytest.mark.parametrize("family", ["late_fusion", "visual_bert", "mmbt"])
@pytest.mark.parametrize("removal", ["drop", "zero"])
def test_trimmed_batch_gives_the_same_outputs(make_config, family, removal):
    config = make_config("dataset=hateful_memes", f"model={family}", f"views.removal={removal}")
    dataset = build_dataset(config, "val")
    samples = [dataset[i] for i in range(12)]
    full = default_collate(samples)
    trimmed = collate(samples)
    assert trimmed["input_ids"].shape[1] < full["input_ids"].shape[1]
    assert trimmed["image_feature_0"].shape[1] <= full["image_feature_0"].shape[1]
    torch.manual_seed(0)
    model = build_model(config, dataset.info).eval()
    with torch.no_grad():
        a = model.forward_views(full, VIEWS)
        b = model.forward_views(trimmed, VIEWS)
    for view in VIEWS:
        assert torch.allclose(a[view], b[view], atol=1e-5), view
