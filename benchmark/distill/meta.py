"""Meta-learned auxiliary weights (docs/protocol.md §6.2, Learning-to-Reweight / Meta-Weight-Net).

One meta step, given the student's training loss ``L(θ, φ)`` as a function of the weights
produced by ``g_φ``:

1. ``L`` on the train batch with the current weights;
2. a virtual SGD step ``θ' = θ − η ∇θ L`` (kept in the graph, ``create_graph=True``);
3. the task loss ``ℓ`` of ``θ'`` on a batch of the held-out meta split, evaluated with
   ``torch.func.functional_call`` so the real parameters are untouched;
4. ``φ ← φ − lr_meta ∇φ ℓ(θ')`` (through θ');
5. the caller then takes the real student step with the updated weights.

The student's outputs from step 1 are reused in step 5 (they do not depend on φ), so a meta
step costs one extra backward with second-order terms plus one meta forward/backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from benchmark.distill.weighting import Learned


class MetaWeightLearner:
    def __init__(
        self,
        scheme: Learned,
        meta_batches: Iterator[dict],
        label_loss: Callable[..., Tensor],
        *,
        meta_lr: float = 1e-2,
        inner_lr: float = 1e-2,
        every: int = 1,
        device: torch.device | None = None,
    ) -> None:
        self.scheme = scheme
        self.meta_batches = meta_batches
        self.label_loss = label_loss
        self.inner_lr = float(inner_lr)
        self.every = max(1, int(every))
        self.optimizer = torch.optim.Adam(scheme.net.parameters(), lr=float(meta_lr))
        self.device = device
        self.steps = 0

    def maybe_step(
        self,
        student: nn.Module,
        loss_with_weights: Callable[[Mapping[str, Tensor]], Tensor],
        weight_inputs: Callable[[], Mapping[str, Tensor]],
        to_device: Callable[[dict], dict],
    ) -> dict[str, float]:
        """Run steps 1–4 every ``every`` calls; return the meta loss for logging."""
        self.steps += 1
        if (self.steps - 1) % self.every:
            return {}
        names, params = zip(*[(n, p) for n, p in student.named_parameters() if p.requires_grad])
        loss = loss_with_weights(weight_inputs())  # (1) weights carry φ's graph
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        virtual = {
            name: (param - self.inner_lr * grad) if grad is not None else param
            for name, param, grad in zip(names, params, grads)
        }  # (2)
        meta_batch = to_device(next(self.meta_batches))
        meta_logits = functional_call(student, virtual, (meta_batch,), {"view": "multi"})  # (3)
        meta_loss = self.label_loss(meta_logits, meta_batch["targets"])
        phi = [p for p in self.scheme.net.parameters() if p.requires_grad]
        phi_grads = torch.autograd.grad(meta_loss, phi, allow_unused=True)  # (4)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(phi, phi_grads):
            p.grad = None if g is None else g.detach()
        self.optimizer.step()
        return {"meta/loss": float(meta_loss.detach())}

    def state_dict(self) -> dict:
        return {"net": self.scheme.net.state_dict(), "optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.scheme.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


def cycle(loader) -> Iterator[dict]:
    """Endless iteration over a (small) meta loader, reshuffled by the loader each pass."""
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise RuntimeError("the meta split is empty: raise data.meta_split.fraction")
