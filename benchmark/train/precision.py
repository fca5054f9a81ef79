"""Mixed precision as MMF's ``training.fp16`` does it, from torch's own AMP.

``float16`` needs a loss scaler (its range is too small for small gradients) and CUDA (CPU
kernels for it are incomplete and slow); ``bfloat16`` has float32's range, so it needs no
scaler and also runs on the CPU, which is how the suite tests the path without a GPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from benchmark.errors import ConfigError

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Precision:
    device_type: str
    dtype: torch.dtype | None = None  # None = full precision
    scaler: torch.amp.GradScaler | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale before clipping them."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def describe(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def build_precision(fp16: bool, amp_dtype: str, device: torch.device) -> Precision:
    if not fp16:
        return Precision(device.type)
    if amp_dtype not in AMP_DTYPES:
        raise ConfigError(f"training.amp_dtype must be one of {sorted(AMP_DTYPES)}, got {amp_dtype!r}.")
    dtype = AMP_DTYPES[amp_dtype]
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError(
            f"training.fp16=true with training.amp_dtype=float16 needs a CUDA GPU, and this run trains on "
            f"{device.type}. Use training.amp_dtype=bfloat16 (CPU autocast), or training.fp16=false."
        )
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("training.amp_dtype=bfloat16: this GPU has no bfloat16 support; use float16.")
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    return Precision(device.type, dtype, scaler)
