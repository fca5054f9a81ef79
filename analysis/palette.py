"""One colour per method, the same in every figure and for every run store.

Why a fixed table: seaborn hands out colours in the order the hues appear, so a figure drawn
from a store without, say, MSD-population shifted every later scheme to another colour, and
the same method looked different from one figure (or one rebuild) to the next. Here a method's
colour is a property of the method: keyed by its Table 2 label (:func:`analysis.spec.row_label`),
with the MSD weighting-scheme names (``"instance"``) as aliases. Colours are from the
colour-blind-safe Okabe-Ito set plus two greys; a label this table does not know (a user's own
scheme) gets a stable colour from its name's hash, never one that depends on what else is drawn.
"""

from __future__ import annotations

import hashlib

from analysis import spec

COLORS: dict[str, str] = {
    "Teacher": "#000000",            # black: the reference every student is measured against
    "Student (no KD)": "#999999",    # grey: no distillation
    "KD": "#E69F00",                 # orange
    "MSD-uniform": "#56B4E9",        # sky blue
    "MSD-population": "#009E73",     # bluish green
    "MSD-instance": "#0072B2",       # blue
    "MSD-learned": "#D55E00",        # vermillion
    "MSD-only-image": "#CC79A7",     # reddish purple
    "MSD-only-text": "#8C6D31",      # brown
}
"""Method label -> colour (hex). Every figure takes its colours from here."""

EXTRA = ("#F0E442", "#7F7F7F", "#17BECF", "#BCBD22", "#9467BD", "#8C564B")
"""Colours for labels not in :data:`COLORS`, chosen by a hash of the label."""


def color(label: str) -> str:
    """The colour of a method: a Table 2 label (``"MSD-instance"``), a scheme (``"instance"``),
    or a label with a suffix (``"MSD-instance (best on val)"``)."""
    if label in COLORS:
        return COLORS[label]
    scheme = spec.row_label("msd", label)
    if scheme in COLORS:
        return COLORS[scheme]
    for known in sorted(COLORS, key=len, reverse=True):  # "MSD-instance (best)" -> MSD-instance
        if label.startswith(known):
            return COLORS[known]
    digest = int(hashlib.sha1(label.encode()).hexdigest()[:8], 16)
    return EXTRA[digest % len(EXTRA)]


DASHES: dict[str, tuple[float, ...]] = {
    "MSD-uniform": (1, 1.5), "MSD-population": (4, 1.5), "MSD-instance": (6, 2, 1, 2), "MSD-learned": (),
    "MSD-only-image": (2, 2), "MSD-only-text": (8, 2),
}
"""Method label -> matplotlib dash pattern (``()`` = solid), for lines that may coincide."""


def dashes(label: str) -> tuple[float, ...]:
    """The dash pattern of a method (solid for one this table does not know)."""
    key = label if label in DASHES else spec.row_label("msd", label)
    return DASHES.get(key, ())


def palette(labels: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``{label: colour}`` for seaborn's ``palette=``; each colour independent of the others."""
    return {label: color(label) for label in labels}
