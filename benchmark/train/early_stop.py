"""Early stopping on the headline validation metric (docs/protocol.md §7.2: best, not last)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    criteria: str
    minimize: bool = False
    patience: int = 4
    best_value: float | None = None
    best_step: int = -1
    bad_evaluations: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record an evaluation; return True when it is the new best."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            self.bad_evaluations += 1
            return False
        improved = self.best_value is None or (value < self.best_value if self.minimize else value > self.best_value)
        if improved:
            self.best_value, self.best_step, self.bad_evaluations = float(value), step, 0
        else:
            self.bad_evaluations += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evaluations >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
