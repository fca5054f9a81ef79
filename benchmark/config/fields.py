"""The field check of the suite's own spec files (grid and HPO YAMLs): one rule, one message.

Why here: both loaders read plain mappings with a fixed set of keys per section, and a typo
must fail the same way in both, naming the section, the key and what is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from benchmark.errors import UserError


def check_fields(node: Any, allowed: Sequence[str], where: str, error: type[UserError]) -> None:
    """Raise ``error`` unless ``node`` is a mapping whose keys are all in ``allowed``."""
    if not isinstance(node, Mapping):
        raise error(f"{where} must be a mapping (allowed keys: {', '.join(allowed)}).")
    for key in node:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise error(f"{where}: unknown entry {key!r}{hint}. Allowed: {', '.join(allowed)}.")
