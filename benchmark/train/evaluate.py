"""Scoring a model on a split, for every view, with MMF's metric keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset

from benchmark.data.info import DatasetInfo
from benchmark.train.batching import to_device
from benchmark.train.distributed import SINGLE, DistContext
from benchmark.train.metrics import compute_metrics


@dataclass
class SplitOutputs:
    """Everything a model produced on one split: logits per view, targets, ids."""

    split: str
    logits: dict[str, torch.Tensor]
    targets: torch.Tensor
    sample_index: torch.Tensor
    ids: list[str]


def shard_loader(dataset: Dataset, dist: DistContext = SINGLE) -> Dataset:
    """This rank's contiguous share of an evaluation split (the whole split on one process)."""
    if not dist.enabled:
        return dataset
    return Subset(dataset, dist.shard(len(dataset)).tolist())


def collect_outputs(
    model: torch.nn.Module, loader, views: Sequence[str], device: torch.device, split: str,
    dist: DistContext = SINGLE,
) -> SplitOutputs:
    """Outputs on ``loader``; under DDP, every rank's shard gathered on every rank in rank
    order, which is the split's own order, so each sample is counted exactly once."""
    local = _collect_local(model, loader, views, device, split)
    if not dist.enabled:
        return local
    return merge_outputs(dist.gather(local))


def merge_outputs(parts: Sequence[SplitOutputs]) -> SplitOutputs:
    return SplitOutputs(
        split=parts[0].split,
        logits={v: torch.cat([p.logits[v] for p in parts]) for v in parts[0].logits},
        targets=torch.cat([p.targets for p in parts]),
        sample_index=torch.cat([p.sample_index for p in parts]),
        ids=[i for p in parts for i in p.ids],
    )


@torch.no_grad()
def _collect_local(
    model: torch.nn.Module, loader, views: Sequence[str], device: torch.device, split: str
) -> SplitOutputs:
    was_training = model.training
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {v: [] for v in views}
    targets, indices, ids = [], [], []
    for batch in loader:
        batch = to_device(batch, device)
        outputs = model.forward_views(batch, tuple(views))
        for view in views:
            logits[view].append(outputs[view].float().cpu())
        targets.append(batch["targets"].cpu())
        indices.append(batch["sample_index"].cpu())
        raw_ids = batch["id"]
        ids.extend(str(i) for i in (raw_ids.tolist() if isinstance(raw_ids, torch.Tensor) else raw_ids))
    model.train(was_training)
    return SplitOutputs(
        split=split,
        logits={v: torch.cat(chunks) for v, chunks in logits.items()},
        targets=torch.cat(targets),
        sample_index=torch.cat(indices),
        ids=ids,
    )


def score_outputs(outputs: SplitOutputs, metric_names: Sequence[str], info: DatasetInfo) -> dict[str, float]:
    """``{"val/hateful_memes/roc_auc": …, "val/hateful_memes/roc_auc@image": …}``."""
    scores: dict[str, float] = {}
    prefix = f"{outputs.split}/{info.name}"
    for view, logits in outputs.logits.items():
        scores.update(compute_metrics(metric_names, logits, outputs.targets, info.task, prefix=prefix, view=view))
    return scores


def predictions_frame(outputs: SplitOutputs, info: DatasetInfo, max_labels: int, top_k: int = 5) -> pd.DataFrame:
    """Per-sample outputs for analysis (bootstrap, Figure 1, per-sample gain).

    Full logits are kept when the label space is small; for VQA-sized spaces only the top-k
    (index, logit) pairs and the per-sample score are kept, so the file stays small.
    """
    frames = []
    targets = outputs.targets
    for view, logits in outputs.logits.items():
        masked = logits.clone()
        if info.task == "soft_score" and masked.shape[1] > 1:
            masked[:, 0] = float("-inf")  # MMF's vqa_accuracy never predicts <unk>
        pred = masked.argmax(dim=1)
        frame = pd.DataFrame(
            {
                "split": outputs.split,
                "view": view,
                "sample_index": outputs.sample_index.numpy(),
                "id": outputs.ids,
                "pred": pred.numpy(),
            }
        )
        if info.task == "single_label":
            frame["target"] = targets.numpy()
            frame["score"] = (pred == targets).float().numpy()
        elif info.task == "soft_score":
            frame["score"] = targets.gather(1, pred[:, None]).squeeze(1).numpy()
            frame["target"] = list(targets.numpy().astype(np.float32)) if targets.shape[1] <= max_labels else None
        else:
            frame["target"] = list(targets.numpy().astype(np.float32))
            frame["score"] = ((torch.sigmoid(logits) > 0.5).float() == (targets > 0.5).float()).float().mean(1).numpy()
        if logits.shape[1] <= max_labels:
            frame["logits"] = list(logits.numpy().astype(np.float32))
        else:
            top = logits.topk(min(top_k, logits.shape[1]), dim=1)
            frame["topk_index"] = list(top.indices.numpy())
            frame["topk_logits"] = list(top.values.numpy().astype(np.float32))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
