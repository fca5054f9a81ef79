"""benchmark.train.cost: FLOPs against hand counts, the latency protocol (warm-up excluded,
median and IQR), peak memory of a forward pass, the settings' errors, and a run's summary."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch import nn

from benchmark.config.loader import build_config
from benchmark.config.validate import ConfigValidationError, validate_config
from benchmark.data.build import build_dataset
from benchmark.data.make import make_dataset
from benchmark.errors import ConfigError
from benchmark.models.build import build_model
from benchmark.tracking.run_id import compute_run_id
from benchmark.train.cost import (
    CostSettings,
    LiveTensorBytes,
    cost_settings,
    count_flops,
    flat_cost,
    latency_record,
    measure_cost,
    sample_batch,
    time_calls,
)
from benchmark.train.trainer import run_experiment


# -- FLOPs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("batch", "n_in", "n_out"), [(1, 3, 4), (5, 16, 7)])
def test_a_linear_layer_costs_two_flops_per_weight_and_sample(batch, n_in, n_out):
    layer = nn.Linear(n_in, n_out)
    assert count_flops(lambda: layer(torch.randn(batch, n_in))) == 2 * n_in * n_out * batch


def test_cpu_attention_is_counted_with_the_sdpa_formula():
    # softmax(QK^T)V: two [S x D] x [D x S]-sized products per head, 2 FLOPs per MAC
    b, h, s, d = 1, 2, 5, 8
    q = torch.randn(b, h, s, d)
    flops = count_flops(lambda: nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * (2 * b * h * s * s * d)


def test_an_eval_mode_transformer_layer_is_counted_whole():
    """Its fused inference kernel must not hide the products: QKV, attention, output, FFN."""
    s, d, heads, ff = 3, 8, 2, 16
    layer = nn.TransformerEncoderLayer(d, heads, ff, batch_first=True).eval()
    hand = 2 * s * d * 3 * d + 2 * (2 * s * s * d) + 2 * s * d * d + 2 * (2 * s * d * ff)
    with torch.no_grad():
        assert count_flops(lambda: layer(torch.randn(1, s, d))) == hand


@pytest.fixture(scope="module")
def hm_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost-data")
    make_dataset("hateful_memes", root, size=48, seed=0)
    return root


def _tiny_late_fusion(data_dir):
    config = build_config(["dataset=hateful_memes", "model=late_fusion", "method=student_only",
                           f"env.data_dir={data_dir}", "tracking.wandb.mode=disabled",
                           "model_config.late_fusion.presets.student.text_encoder.num_layers=0",
                           "model_config.late_fusion.presets.student.image_encoder.num_layers=0",
                           "model_config.late_fusion.presets.student.fusion.hidden_size=16",
                           "model_config.late_fusion.presets.student.text_encoder.hidden_size=8",
                           "model_config.late_fusion.presets.student.text_encoder.embedding_size=4",
                           "model_config.late_fusion.presets.student.image_encoder.hidden_size=12",
                           "model_config.late_fusion.head.hidden_size=6"])
    dataset = build_dataset(config, "test")
    return build_model(config, dataset.info).eval(), dataset


def test_a_small_late_fusion_model_costs_its_hand_count(hm_data):
    """Bag-of-embeddings text (lookups and means: 0; the factorised table's 4 -> 8 projection per
    token), regions projected (features and boxes), concat MLP fusion, MLP head; the only other
    ops are element-wise (not counted)."""
    model, dataset = _tiny_late_fusion(hm_data)
    batch = sample_batch(dataset, 1)
    regions, features = batch["image_feature_0"].shape[1:] if "image_feature_0" in batch else _region_shape(batch)
    text_h, image_h, fusion_h, head_h, labels = 8, 12, 16, 6, dataset.info.num_labels
    tokens = batch["input_ids"].shape[1]
    hand = (2 * tokens * 4 * text_h                                        # TokenEmbedding.proj
            + 2 * regions * features * image_h + 2 * regions * 4 * image_h  # RegionTokens.proj and .box
            + 2 * (text_h + image_h) * fusion_h                            # ConcatMLP
            + 2 * fusion_h * head_h + 2 * head_h * labels)                 # MLPHead
    with torch.no_grad():
        assert count_flops(lambda: model.forward_views(batch, ("multi",))) == hand


def _region_shape(batch: dict) -> tuple[int, int]:
    three_d = [v for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() == 3 and v.shape[-1] != 4]
    assert len(three_d) == 1, {k: tuple(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return int(three_d[0].shape[1]), int(three_d[0].shape[2])


# -- latency ----------------------------------------------------------------------------------------
class FakeClock:
    """Each timed call lasts the next duration of a list; warm-up calls would last 100 s."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = list(durations)
        self.now = 0.0
        self.calls = 0
        self.timing = False

    def clock(self) -> float:
        self.timing = not self.timing  # start/stop readings alternate
        return self.now

    def call(self) -> None:
        self.calls += 1
        self.now += self.durations.pop(0) if self.timing else 100.0


def test_warm_up_calls_are_made_but_not_timed():
    fake = FakeClock([0.3, 0.1, 0.2, 0.5])
    timing = time_calls(fake.call, repeats=4, warmup=3, clock=fake.clock)
    assert fake.calls == 7
    assert timing.times_s == pytest.approx((0.3, 0.1, 0.2, 0.5))
    assert timing.median_s == pytest.approx(0.25)
    # inclusive quartiles of (0.1, 0.2, 0.3, 0.5): 0.175 and 0.35
    assert (timing.q25_s, timing.q75_s, timing.iqr_s) == pytest.approx((0.175, 0.35, 0.175))
    assert (timing.repeats, timing.warmup) == (4, 3)


def test_one_repeat_has_no_spread_and_bad_counts_are_refused():
    fake = FakeClock([0.2])
    timing = time_calls(fake.call, repeats=1, warmup=0, clock=fake.clock)
    assert (timing.median_s, timing.iqr_s) == pytest.approx((0.2, 0.0))
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_calls(fake.call, repeats=0, warmup=0)


def test_a_latency_record_is_per_batch_and_per_sample_in_ms():
    fake = FakeClock([0.064, 0.128, 0.032])
    record = latency_record(time_calls(fake.call, 3, 1, clock=fake.clock), batch_size=64)
    assert record["median_ms"] == pytest.approx(64.0)
    assert record["per_sample_ms"] == pytest.approx(1.0)
    assert record["iqr_ms"] == pytest.approx(statistics.quantiles([32, 64, 128], n=4, method="inclusive")[2] - 48.0)
    assert record["repeats"] == 3 and record["warmup"] == 1


# -- memory -----------------------------------------------------------------------------------------
def test_peak_live_bytes_of_a_forward_pass_by_hand():
    # Linear(10->100) output and ReLU output (not in place) live together: 2 x 8x100 floats;
    # the weight's transpose is a view of a weight, not an allocation.
    net = nn.Sequential(nn.Linear(10, 100), nn.ReLU(), nn.Linear(100, 5))
    x = torch.randn(8, 10)
    tracker = LiveTensorBytes()
    with torch.no_grad(), tracker:
        y = net(x)
    assert tracker.peak == 2 * 8 * 100 * 4
    assert tracker.live == y.numel() * 4  # only the output is still alive


# -- settings ---------------------------------------------------------------------------------------
def test_settings_default_and_read_from_the_config():
    assert cost_settings(None) == CostSettings()
    config = build_config(["evaluation.cost.repeats=3", "evaluation.cost.batch_sizes=[1,8]"])
    assert cost_settings(config.evaluation.cost) == CostSettings(True, 3, 2, (1, 8))


@pytest.mark.parametrize(
    ("node", "match"),
    [({"repeat": 3}, "unknown option.*'repeat'.*enabled, repeats"), ({"repeats": 0}, r"repeats must be an integer >= 1"),
     ({"warmup": -1}, "warmup must be an integer >= 0"), ({"batch_sizes": []}, "non-empty list"),
     ({"batch_sizes": [1, 0]}, "batch_sizes must be an integer >= 1"), ({"enabled": "yes"}, "true or false"),
     ({"repeats": 2.5}, "repeats must be an integer")],
)
def test_bad_cost_settings_are_clear_errors(node, match):
    with pytest.raises(ConfigError, match=match):
        cost_settings(node)


def test_validation_reports_bad_cost_settings_before_a_run():
    with pytest.raises(ConfigValidationError, match="evaluation.cost.repeats must be an integer >= 1"):
        validate_config(build_config(["evaluation.cost.repeats=0"]))
    with pytest.raises(ConfigError, match="Unknown config key 'evaluation.cost.repeat'"):
        build_config(["evaluation.cost.repeat=3"])


def test_cost_settings_never_change_the_run_id():
    base = ["dataset=hateful_memes", "method=teacher"]
    assert compute_run_id(build_config([*base, "evaluation.cost.enabled=false", "evaluation.cost.repeats=9"])) \
        == compute_run_id(build_config(base))


# -- a model and a run ------------------------------------------------------------------------------
def test_measure_cost_has_every_figure_and_restores_threads_and_mode(hm_data):
    model, dataset = _tiny_late_fusion(hm_data)
    model.train()
    threads = torch.get_num_threads()
    cost = measure_cost(model, dataset, torch.device("cpu"), CostSettings(repeats=2, warmup=1, batch_sizes=(1, 4)))
    assert model.training and torch.get_num_threads() == threads
    assert cost["params"] == model.num_parameters() and cost["flops_per_sample"] > 0
    assert cost["cpu"]["threads"] == 1 and set(cost["cpu"]["latency"]) == {"1", "4"}
    assert cost["cpu"]["latency"]["4"]["repeats"] == 2 and cost["cpu"]["latency"]["4"]["batch_size"] == 4
    weights = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    assert cost["cpu"]["peak_memory_bytes"]["4"] > cost["cpu"]["peak_memory_bytes"]["1"] > weights
    flat = flat_cost(cost)
    assert {"cost/flops_per_sample", "cost/cpu/latency_ms_per_sample_bs4", "cost/cpu/peak_memory_mb_bs1"} <= set(flat)


def test_a_failing_measurement_keeps_what_it_measured_and_does_not_raise(hm_data):
    model, dataset = _tiny_late_fusion(hm_data)

    def broken(batch, views):
        raise RuntimeError("cannot trace this")

    model.forward_views = broken
    with pytest.warns(RuntimeWarning, match="cost measurement failed"):
        cost = measure_cost(model, dataset, torch.device("cpu"), CostSettings(repeats=1, warmup=0))
    assert cost["error"] == "RuntimeError: cannot trace this" and cost["params"] > 0 and "flops_per_sample" not in cost
    assert flat_cost(cost)["cost/params"] == cost["params"]


def test_a_run_writes_its_cost_and_can_switch_it_off(hm_data, tmp_path):
    args = ["dataset=hateful_memes", "method=student_only", f"env.data_dir={hm_data}",
            f"env.save_dir={tmp_path / 'runs'}", "tracking.wandb.mode=disabled", "training.max_updates=2",
            "training.batch_size=16", "evaluation.cost.repeats=2", "evaluation.cost.batch_sizes=[1,4]"]
    result = run_experiment(build_config(args), progress=False)
    summary = json.loads(result.run_dir.file("summary.json").read_text())
    assert summary["cost"]["params"] == summary["model_params"]
    assert summary["cost"]["settings"] == {"enabled": True, "repeats": 2, "warmup": 2, "batch_sizes": [1, 4]}
    assert summary["cost"]["measure_time_s"] < 5
    off = run_experiment(build_config([*args, "evaluation.cost.enabled=false", f"env.save_dir={tmp_path / 'off'}"]),
                         progress=False)
    assert off.run_id == result.run_id and "cost" not in off.summary


def test_the_wandb_summary_gets_the_cost_figures():
    from types import SimpleNamespace

    from benchmark.tracking.wandb_logger import WandbLogger

    finished = []
    fake_run = SimpleNamespace(summary={}, finish=lambda exit_code: finished.append(exit_code))
    logger = WandbLogger(artifacts=False)
    logger.run = fake_run
    cost = {"params": 10, "flops_per_sample": 40, "cpu": {"latency": {"1": {"per_sample_ms": 0.5, "per_sample_iqr_ms": 0.1}},
                                                        "peak_memory_bytes": {"1": 2**21}}}
    logger.on_finish({"status": "failed", "run_id": "r", "cost": cost})  # failed: no media, only the summary
    assert fake_run.summary["cost/flops_per_sample"] == 40 and fake_run.summary["cost/cpu/peak_memory_mb_bs1"] == 2.0
    assert fake_run.summary["cost/cpu/latency_ms_per_sample_bs1"] == 0.5 and finished == [1]


def test_the_cuda_memory_path_is_the_allocator_peak_beyond_what_existed(monkeypatch):
    """No GPU here: the allocator is stood in for, to check what the GPU path computes."""
    from benchmark.train.cost import peak_forward_bytes

    state = {"allocated": 1000, "peak": 1000}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=state["allocated"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    assert peak_forward_bytes(lambda: state.update(peak=1600), torch.device("cuda")) == 600
