"""Keys added after runs existed do not rename those runs while they hold neutral values."""

import pytest

from benchmark.config.loader import build_config
from benchmark.tracking.run_id import NEUTRAL_WHEN, compute_run_id, hashable_config

BASE = ["dataset=hateful_memes", "method=teacher"]


def test_neutral_values_leave_the_hash_and_others_enter_it():
    payload = hashable_config(build_config(BASE))
    assert "fp16" not in payload["training"] and "update_frequency" not in payload["training"]
    assert "num_warmup_steps" not in payload["scheduler"]["params"]
    assert "teacher_loss" not in payload["views"]
    assert compute_run_id(build_config([*BASE, "views.teacher_loss=0"])) == compute_run_id(build_config(BASE))
    assert set(NEUTRAL_WHEN) >= {"training.fp16", "training.update_frequency", "checkpoint.resume_file"}


@pytest.mark.parametrize(
    "changed",
    ["training.fp16=true", "training.update_frequency=2", "scheduler.params.num_warmup_steps=2000",
     "checkpoint.resume_file=/tmp/x.pt", "views.teacher_loss=1.0"],
)
def test_a_non_neutral_value_gives_another_run(changed):
    assert compute_run_id(build_config([*BASE, changed])) != compute_run_id(build_config(BASE))


@pytest.mark.parametrize(
    "volatile",
    ["training.distributed=off", "training.pin_memory=true", "training.compile=true", "run_type=test",
     "evaluation.predict=true", "training.amp_dtype=bfloat16"],  # amp_dtype matters only with fp16
)
def test_where_and_how_a_run_goes_is_not_its_identity(volatile):
    assert compute_run_id(build_config([*BASE, volatile])) == compute_run_id(build_config(BASE))


def test_amp_dtype_is_part_of_the_identity_once_fp16_is_on():
    fp16 = [*BASE, "training.fp16=true"]
    assert compute_run_id(build_config([*fp16, "training.amp_dtype=bfloat16"])) != compute_run_id(build_config(fp16))
