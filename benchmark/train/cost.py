"""What a trained model costs to run: parameters, FLOPs, latency and peak memory per sample.

Why a module of its own: distillation exists to make models that are cheaper than their
teacher, so every run states what it saves, measured the same way for every model, at the
end of training (``Trainer._finish``) on the weights that were evaluated. The figures are
volatile measurements of a machine, not results: ``evaluation.cost`` never enters the run id
(:data:`benchmark.tracking.run_id.VOLATILE_KEYS`), and a run's cost can be re-measured
without retraining it.

What is measured, for the multi view (``forward_views(batch, ("multi",))``, eval mode, no
gradients):

* ``flops_per_sample`` — :class:`torch.utils.flop_counter.FlopCounterMode` on a batch of one
  sample: 2 FLOPs per multiply-add of matrix products, convolutions and attention (the CPU
  attention kernel is counted with torch's own SDPA formula, which torch leaves unregistered);
  element-wise ops, norms and softmax are not counted, as everywhere that uses this counter.
* latency at each of ``batch_sizes`` on the CPU with **one thread** (``torch.set_num_threads(1)``,
  the previous count restored afterwards): ``warmup`` untimed calls, then ``repeats`` timed
  calls; the median seconds per batch and per sample with the quartiles and their IQR.
* peak memory per batch size: weights + the input batch + the peak bytes of the tensors the
  forward pass holds alive at once (a dispatch-mode tracker: the CPU allocator has no peak
  counter, and a process's ``ru_maxrss`` was set long before by training). On CUDA,
  ``torch.cuda.max_memory_allocated`` over the forward pass.
* on a GPU run, the same latency and memory figures on the GPU as well (synchronised).

Settings: ``evaluation.cost.{enabled, repeats, warmup, batch_sizes}`` (defaults.yaml).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from benchmark.errors import ConfigError
from benchmark.train.batching import to_device

COST_KEYS = ("enabled", "repeats", "warmup", "batch_sizes")
VIEW = "multi"


# -- settings ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostSettings:
    """``evaluation.cost``: whether to measure, and how many timed and warm-up calls."""

    enabled: bool = True
    repeats: int = 5
    warmup: int = 2
    batch_sizes: tuple[int, ...] = (1, 64)


def cost_settings(node: Mapping[str, Any] | None) -> CostSettings:
    """Read and check ``evaluation.cost``; a wrong key or value is a :class:`ConfigError`."""
    if node is None:
        return CostSettings()
    if not isinstance(node, Mapping):
        raise ConfigError(f"evaluation.cost must be a mapping with keys {', '.join(COST_KEYS)}, got {node!r}.")
    unknown = [k for k in node if k not in COST_KEYS]
    if unknown:
        raise ConfigError(f"evaluation.cost: unknown option(s) {', '.join(map(repr, unknown))}; "
                          f"the options are {', '.join(COST_KEYS)}.")
    default = CostSettings()
    enabled = node.get("enabled", default.enabled)
    if not isinstance(enabled, bool):
        raise ConfigError(f"evaluation.cost.enabled must be true or false, got {enabled!r}.")
    repeats = _integer(node.get("repeats", default.repeats), "evaluation.cost.repeats", 1,
                       "the timed calls per batch size (N of the median)")
    warmup = _integer(node.get("warmup", default.warmup), "evaluation.cost.warmup", 0, "the untimed calls before timing")
    sizes = node.get("batch_sizes", default.batch_sizes)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ConfigError(f"evaluation.cost.batch_sizes must be a non-empty list of batch sizes (e.g. [1, 64]), "
                          f"got {sizes!r}.")
    batch_sizes = tuple(_integer(s, "evaluation.cost.batch_sizes", 1, "a batch size") for s in sizes)
    return CostSettings(enabled, repeats, warmup, batch_sizes)


def _integer(value: Any, key: str, low: int, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low} ({meaning}), got {value!r}.")
    return value


# -- FLOPs ------------------------------------------------------------------------------------------
# Kernels torch's counter does not know; the CPU's fused attention is SDPA like the CUDA ones.
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matrix products, convolutions, attention; 2 per MAC).

    Gradients are on while counting: without them an eval-mode ``nn.TransformerEncoderLayer``
    runs one fused inference kernel the counter cannot see into (it counted 4 % of a
    late-fusion teacher's FLOPs); with them it runs the same products as separate ops.
    """
    with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


# -- latency ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median of ``repeats`` timed calls after ``warmup`` untimed ones."""

    repeats: int
    warmup: int
    median_s: float
    q25_s: float
    q75_s: float
    times_s: tuple[float, ...]

    @property
    def iqr_s(self) -> float:
        return self.q75_s - self.q25_s


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int,
               clock: Callable[[], float] = time.perf_counter,
               sync: Callable[[], None] = lambda: None) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed one by one.

    ``sync`` waits for the device (``torch.cuda.synchronize``) before each clock reading, so
    an asynchronous GPU call is timed to its end. Quartiles are the inclusive method of
    :func:`statistics.quantiles` (one call: all three are that call).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return timing_of(times, warmup)


def timing_of(times: Sequence[float], warmup: int) -> Timing:
    """The median and inclusive quartiles of timed calls (:func:`statistics.quantiles`; one
    call: all three are that call). Also pools the passes of several timed blocks
    (``msd cost remeasure``), so both summarise timings the same way."""
    times = [float(t) for t in times]
    if not times:
        raise ValueError("no timed calls to summarise")
    if len(times) == 1:
        q25 = q75 = times[0]
    else:
        q25, _, q75 = statistics.quantiles(times, n=4, method="inclusive")
    return Timing(len(times), warmup, statistics.median(times), q25, q75, tuple(times))


def latency_record(timing: Timing, batch_size: int) -> dict[str, Any]:
    """What a summary keeps of one timing: per batch and per sample, in milliseconds."""
    ms = 1e3
    return {
        "batch_size": batch_size, "repeats": timing.repeats, "warmup": timing.warmup,
        "median_ms": timing.median_s * ms, "q25_ms": timing.q25_s * ms, "q75_ms": timing.q75_s * ms,
        "iqr_ms": timing.iqr_s * ms,
        "per_sample_ms": timing.median_s * ms / batch_size, "per_sample_iqr_ms": timing.iqr_s * ms / batch_size,
    }


@dataclass
class _Threads:
    """``torch.set_num_threads(n)`` for a block, the previous count restored afterwards."""

    n: int
    previous: int = 0

    def __enter__(self) -> None:
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.previous)


# -- memory -----------------------------------------------------------------------------------------
class LiveTensorBytes(TorchDispatchMode):
    """The peak bytes of storages created inside the block that are alive at the same time.

    Every op's output storage is counted once (views share their base's storage) from its
    creation until the last tensor made inside the block that points to it is freed
    (weakref finalizers), so the peak is what a forward pass holds at once beyond its
    inputs and weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._holders: dict[int, list[int]] = {}  # storage key -> [tensors alive, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage_key(t) for t in _tensors([*args, *(kwargs or {}).values()])}
        for tensor in _tensors(out):
            self._track(tensor, inputs)
        return out

    def _track(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        key = _storage_key(tensor)
        holder = self._holders.get(key)
        if holder is None:
            if key in inputs:  # a view of (or in-place op on) a weight or input: nothing new
                return
            storage = tensor.untyped_storage()
            holder = self._holders[key] = [0, storage.nbytes()]
            self.live += holder[1]
            self.peak = max(self.peak, self.live)
        holder[0] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        holder = self._holders.get(key)
        if holder is None:
            return
        holder[0] -= 1
        if holder[0] == 0:
            self.live -= holder[1]
            del self._holders[key]


def _storage_key(tensor: torch.Tensor) -> int:
    storage = tensor.untyped_storage()
    return storage.data_ptr() if storage.nbytes() else id(storage)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in a (nested) batch or of a module's parameters and buffers."""
    if isinstance(value, nn.Module):
        return sum(t.numel() * t.element_size() for t in (*value.parameters(), *value.buffers()))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def peak_forward_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated by one call beyond what existed before it (CUDA: the allocator's
    own peak; elsewhere: :class:`LiveTensorBytes`)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    tracker = LiveTensorBytes()
    with tracker:
        fn()
    return int(tracker.peak)


# -- one model --------------------------------------------------------------------------------------
def sample_batch(dataset: Any, batch_size: int) -> dict:
    """The first ``batch_size`` samples of ``dataset`` (cycled when it is smaller), collated
    as the loaders collate them."""
    from benchmark.data.build import build_dataloader

    if len(dataset) == 0:
        raise ValueError("cannot measure the cost of a model on an empty dataset")
    samples = [dataset[i % len(dataset)] for i in range(batch_size)]
    loader = build_dataloader(samples, batch_size=batch_size)
    return next(iter(loader))


def device_figures(model: nn.Module, batches: Mapping[int, dict], device: torch.device,
                   settings: CostSettings) -> dict[str, Any]:
    """Latency and peak memory of ``model`` (already on ``device``) at each batch size."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    latency, memory = {}, {}
    for size, batch in batches.items():
        batch = to_device(batch, device)
        call = lambda b=batch: model.forward_views(b, (VIEW,))  # noqa: E731
        latency[str(size)] = latency_record(time_calls(call, settings.repeats, settings.warmup, sync=sync), size)
        memory[str(size)] = peak_memory_bytes(model, batch, device)
    return {"device": str(device), "latency": latency, "peak_memory_bytes": memory}


def peak_memory_bytes(model: nn.Module, batch: dict, device: torch.device) -> int:
    """Weights + the input batch (already on ``device``) + the peak of one multi-view forward pass."""
    return tensor_bytes(model) + tensor_bytes(batch) + peak_forward_bytes(
        lambda: model.forward_views(batch, (VIEW,)), device)


def measure_cost(model: nn.Module, dataset: Any, device: torch.device, settings: CostSettings) -> dict[str, Any]:
    """Every cost figure of a trained model, for ``summary.json["cost"]``.

    The CPU figures use one thread and a copy of the model on the CPU when it was trained
    elsewhere; a GPU run adds the same figures on its GPU. The model's mode and threads are
    restored afterwards. A measurement that fails (a model the counter cannot trace, memory
    running out at batch 64) must not cost a finished training: the figures measured so far
    are kept with an ``error`` and a warning, and the run completes.
    """
    started = time.perf_counter()
    out: dict[str, Any] = {"view": VIEW, "settings": asdict(settings)}
    try:
        _measure(model, dataset, device, settings, out)
    except Exception as exc:  # noqa: BLE001 - see the docstring; interrupts still propagate
        out["error"] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"The cost measurement failed ({out['error']}); summary.json keeps what was measured.",
                      RuntimeWarning, stacklevel=2)
    out["measure_time_s"] = round(time.perf_counter() - started, 4)
    return out


def _measure(model: nn.Module, dataset: Any, device: torch.device, settings: CostSettings, out: dict[str, Any]) -> None:
    was_training = model.training
    out["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batches = {size: sample_batch(dataset, size) for size in settings.batch_sizes}
    cpu = torch.device("cpu")
    cpu_model = model if device.type == "cpu" else copy.deepcopy(model).to(cpu)
    try:
        model.eval()
        cpu_model.eval()
        with torch.no_grad(), _Threads(1):
            one = to_device(batches.get(1) or sample_batch(dataset, 1), cpu)
            out["flops_per_sample"] = count_flops(lambda: cpu_model.forward_views(one, (VIEW,)))
            out["cpu"] = {"threads": 1, **device_figures(cpu_model, batches, cpu, settings)}
        if device.type != "cpu":
            with torch.no_grad():
                out[device.type] = device_figures(model, batches, device, settings)
    finally:
        model.train(was_training)


def flat_cost(cost: Mapping[str, Any] | None) -> dict[str, float]:
    """The headline cost figures as flat ``cost/...`` keys (W&B summary, analysis frames)."""
    if not cost:
        return {}
    flat: dict[str, float] = {}
    for key in ("params", "flops_per_sample", "measure_time_s"):
        if cost.get(key) is not None:
            flat[f"cost/{key}"] = cost[key]
    for where in ("cpu", "cuda", "mps"):
        figures = cost.get(where)
        if not isinstance(figures, Mapping):
            continue
        for size, record in (figures.get("latency") or {}).items():
            flat[f"cost/{where}/latency_ms_per_sample_bs{size}"] = record["per_sample_ms"]
            flat[f"cost/{where}/latency_iqr_ms_per_sample_bs{size}"] = record["per_sample_iqr_ms"]
        for size, value in (figures.get("peak_memory_bytes") or {}).items():
            flat[f"cost/{where}/peak_memory_mb_bs{size}"] = value / 2**20
    return flat
