"""What the paper's tables are made of: datasets, columns, rows and display names.

Kept in one place so the table builders, the figures and the claims registry agree on the
names of rows ("MSD-instance") and columns ("MM-IMDB macro-F1") without repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

PAPER_DATASETS: tuple[str, ...] = ("hateful_memes", "mmimdb", "visual_entailment", "vqa2")
"""The four datasets of the paper (docs/protocol.md §2.1), in Table 2's column order."""

ALL_DATASETS: tuple[str, ...] = (*PAPER_DATASETS, "easy_vqa")
"""Table 2's columns: the paper's datasets plus the real easy-VQA case (§10.2)."""

DATASET_TITLES: dict[str, str] = {
    "hateful_memes": "Hateful Memes",
    "mmimdb": "MM-IMDB",
    "visual_entailment": "SNLI-VE",
    "vqa2": "VQA2",
    "easy_vqa": "easy-VQA",
}

METRIC_TITLES: dict[str, str] = {
    "roc_auc": "AUROC",
    "accuracy": "Acc.",
    "binary_f1": "F1",
    "multilabel_micro_f1": "micro-F1",
    "multilabel_macro_f1": "macro-F1",
    "vqa_accuracy": "VQA acc.",
}

EXTRA_TABLE2_METRICS: dict[str, tuple[str, ...]] = {"mmimdb": ("multilabel_macro_f1",)}
"""Columns besides the headline metric: the paper shows MM-IMDB micro *and* macro F1 (§9.3)."""

TABLE_SPLIT = "test"
"""Tables report the test split; the best MSD variant is chosen on validation (never on test)."""
SELECTION_SPLIT = "val"

DEFAULT_EXPECTED_SEEDS = 3
"""Seeds per cell when no grid file says otherwise (docs/protocol.md §8.1: seeds 0, 1, 2)."""

SALIENCY_DEFINITIONS: tuple[str, ...] = ("divergence", "loss", "shapley")
TEMPERATURES: tuple[float, ...] = (1.0, 2.0, 4.0)
CLASS_REDUCTIONS: tuple[str, ...] = ("mean", "sum")
MULTI_LABEL_DATASETS: tuple[str, ...] = ("mmimdb", "vqa2")
"""Paper datasets with per-class (Bernoulli) divergences, where ``distill.class_reduction`` matters."""


@dataclass(frozen=True)
class RowSpec:
    """One row of a table: which runs it aggregates."""

    label: str
    method: str
    weighting: str | None = None
    variant: tuple[tuple[str, object], ...] = ()  # config keys that differ from the defaults

    @property
    def is_student(self) -> bool:
        return self.method != "teacher"

    @property
    def is_msd(self) -> bool:
        return self.method == "msd"


TEACHER = RowSpec("Teacher", "teacher")
STUDENT = RowSpec("Student (no KD)", "student_only")
KD = RowSpec("KD", "kd")
MSD_SCHEMES: tuple[str, ...] = ("uniform", "population", "instance", "learned")
TABLE2_ROWS: tuple[RowSpec, ...] = (
    TEACHER, STUDENT, KD, *(RowSpec(f"MSD-{w}", "msd", w) for w in MSD_SCHEMES),
)
ONLY_IMAGE = RowSpec("MSD-only-image", "msd", "only_image")
ONLY_TEXT = RowSpec("MSD-only-text", "msd", "only_text")
MSD_UNIFORM = RowSpec("MSD-uniform", "msd", "uniform")


def row_label(method: str, weighting: str | None) -> str:
    """The display name of a (method, weighting) pair, as in Table 2."""
    if method == "msd":
        return f"MSD-{(weighting or 'none').replace('_', '-')}"
    return {"teacher": "Teacher", "student_only": "Student (no KD)", "kd": "KD"}.get(method, method)


def metric_column(dataset: str, metric: str) -> str:
    """``"MM-IMDB macro-F1"``: the header of a (dataset, metric) column."""
    return f"{DATASET_TITLES.get(dataset, dataset)} {METRIC_TITLES.get(metric, metric)}"


@cache
def headline_metric(dataset: str) -> str:
    """The dataset's headline metric from its YAML (``dataset_config.<name>.headline_metric``).

    Read from the shipped config rather than hard-coded so a dataset added with its own YAML
    gets the right Table 2 column; a dataset without a config gets ``accuracy``.
    """
    from benchmark.train.metrics import headline_metric as configured_headline

    try:
        return configured_headline(dataset)
    except Exception:  # noqa: BLE001 - an unknown dataset still gets a column from the runs
        return "accuracy"


def table2_columns(datasets: tuple[str, ...] = ALL_DATASETS) -> list[tuple[str, str]]:
    """``[(dataset, metric), ...]``: headline metric of each dataset, plus MM-IMDB macro-F1."""
    columns: list[tuple[str, str]] = []
    for dataset in datasets:
        columns.append((dataset, headline_metric(dataset)))
        columns += [(dataset, m) for m in EXTRA_TABLE2_METRICS.get(dataset, ())]
    return columns
