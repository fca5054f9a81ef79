"""The claims registry (``analysis/claims.yaml``): ours vs the paper, cell by cell.

Our value of a claim is read from the tables' CSVs (``results/tables/<table>.csv``), i.e.
from exactly what the tables show, never recomputed differently. A claim whose
``paper_value`` is null reports "paper value not available"; a filled one passes when
``|ours − paper| ≤ tolerance`` (both ×100), and fails otherwise or when we have no run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DEFAULT_CLAIMS = Path(__file__).with_name("claims.yaml")
NOT_AVAILABLE = "paper value not available"
REQUIRED = ("id", "table", "row", "dataset", "metric", "split", "paper_value")


class ClaimsError(ValueError):
    """The claims file is malformed; the message names the file and the entry."""


@dataclass
class ClaimResult:
    id: str
    kind: str  # "value" | "qualitative"
    description: str
    ours: float | None
    n: int
    paper: Any
    tolerance: float | None
    status: str
    failed: bool
    enforced: bool = True  # qualitative claims count as failures only when enforced


def load_claims(path: str | Path = DEFAULT_CLAIMS) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClaimsError(f"Cannot read claims file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ClaimsError(f"Claims file {path} needs a top-level 'claims:' list.")
    for i, claim in enumerate(data["claims"]):
        missing = [k for k in REQUIRED if k not in (claim or {})]
        if missing:
            raise ClaimsError(f"Claims file {path}, claims[{i}] ({(claim or {}).get('id', '?')}): missing {missing}.")
        if claim["paper_value"] is not None and not isinstance(claim["paper_value"], (int, float)):
            raise ClaimsError(f"Claims file {path}, {claim['id']}: paper_value must be a number or null.")
    return data


def _read_table(tables_dir: Path, name: str, cache: dict[str, pd.DataFrame | None]) -> pd.DataFrame | None:
    if name not in cache:
        path = tables_dir / f"{name}.csv"
        cache[name] = pd.read_csv(path) if path.exists() else None
    return cache[name]


def _lookup(frame: pd.DataFrame | None, row: str, dataset: str, metric: str, split: str,
            prefix: bool = False) -> pd.Series | None:
    if frame is None or frame.empty:
        return None
    rows = frame["row"].astype(str)
    mask = (rows.str.startswith(row) if prefix else rows == row) & (frame["dataset"] == dataset)
    mask &= (frame["metric"] == metric) & (frame["split"].astype(str) == split)
    if "variant" in frame:
        mask &= frame["variant"].isna() | (frame["variant"].astype(str) == "")
    hits = frame[mask]
    return None if hits.empty else hits.iloc[0]


def _ours(hit: pd.Series | None) -> tuple[float | None, int]:
    if hit is None or pd.isna(hit.get("mean")) or int(hit.get("n") or 0) == 0:
        return None, 0
    return float(hit["mean"]) * 100.0, int(hit["n"])


def evaluate_claims(claims: dict[str, Any], tables_dir: str | Path) -> list[ClaimResult]:
    """Compare every claim with the tables in ``tables_dir``."""
    tables_dir = Path(tables_dir)
    cache: dict[str, pd.DataFrame | None] = {}
    default_tol = float(claims.get("default_tolerance", 1.0))
    results = []
    for claim in claims["claims"]:
        hit = _lookup(_read_table(tables_dir, claim["table"], cache), claim["row"], claim["dataset"],
                      claim["metric"], str(claim["split"]))
        ours, n = _ours(hit)
        paper, tol = claim["paper_value"], float(claim.get("tolerance", default_tol))
        if paper is None:
            status, failed = NOT_AVAILABLE, False
        elif ours is None:
            status, failed = "no completed run: cannot compare", True
        else:
            diff = ours - float(paper)
            failed = abs(diff) > tol + 1e-9
            status = f"{'outside' if failed else 'within'} tolerance (diff {diff:+.2f}, tol {tol:g})"
        desc = f"{claim['table']}: {claim['row']} on {claim['dataset']} {claim['metric']} ({claim['split']})"
        results.append(ClaimResult(claim["id"], "value", desc, ours, n, paper, tol, status, failed))
    for claim in claims.get("qualitative") or []:
        frame = _read_table(tables_dir, claim.get("table", "ablations"), cache)
        args = (claim["dataset"], claim["metric"], str(claim.get("split", "test")))
        a, _ = _ours(_lookup(frame, claim["row"], *args, prefix=True))
        b, _ = _ours(_lookup(frame, claim["than"], *args))
        if a is None or b is None:
            status, holds = "no completed runs for both sides: cannot tell", None
        else:
            holds = a > b
            status = f"{'holds' if holds else 'does not hold'} here ({a:.2f} vs {b:.2f})"
        enforced = bool(claim.get("enforce", False))
        results.append(ClaimResult(claim["id"], "qualitative", claim.get("statement", claim["id"]), a,
                                   0, "stated in the paper", None, status, enforced and holds is not True, enforced))
    return results


def claims_frame(results: list[ClaimResult], kind: str = "value") -> pd.DataFrame:
    """The report's view: one line per claim, ours next to the paper's."""
    rows = []
    for r in results:
        if r.kind != kind:
            continue
        ours = "—" if r.ours is None or math.isnan(r.ours) else f"{r.ours:.2f}"
        if kind == "value":
            rows.append({"claim": r.description, "ours (×100)": ours, "seeds": r.n,
                         "paper (×100)": NOT_AVAILABLE if r.paper is None else f"{float(r.paper):.2f}",
                         "check": "not compared" if r.paper is None else r.status})
        else:
            rows.append({"statement (paper's abstract)": r.description, "ours": r.status,
                         "enforced": "yes" if r.enforced else "no"})
    return pd.DataFrame(rows)
