"""Interrupted trials are marked FAIL with a reason and re-queued; the study then finishes its
budget, and the re-queued trial resumes its run from the last checkpoint."""

from __future__ import annotations

import subprocess
import time

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from benchmark.hpo import objective as objective_module
from benchmark.hpo.recovery import FAIL_REASON, OWNER, owner_record
from benchmark.hpo.spec import load_search
from benchmark.hpo.storage import resolve_url
from benchmark.hpo.study import open_study, run_search
from benchmark.tracking.run_store import RunDir

ALPHA = "distill.alpha"
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _orphan(study, owner: dict) -> int:
    """A RUNNING trial with parameters, as a worker leaves it when it is killed."""
    trial = study.ask({ALPHA: FloatDistribution(0.1, 0.9)})
    trial.set_user_attr(OWNER, owner)
    return trial.number


def test_trial_of_a_dead_worker_is_failed_and_retried(write_search, quiet):
    spec = load_search(write_search("kd", name="dead_owner", space={ALPHA: "default"}))
    study = open_study(spec, resolve_url(spec.name), spec.name)
    number = _orphan(study, {**owner_record(), "pid": _dead_pid()})
    orphan_alpha = study.trials[number].params[ALPHA]

    report = run_search(spec, budget=spec.budget, log=quiet.append)
    by_number = {t.number: t for t in report.trials}
    assert by_number[number].state == TrialState.FAIL
    assert by_number[number].user_attrs[FAIL_REASON] == "dead_owner"
    (retry,) = [t for t in report.trials if t.system_attrs.get("failed_trial") == number]
    assert retry.state == TrialState.COMPLETE and retry.params[ALPHA] == orphan_alpha
    # The budget (2) counts the retry, not the interrupted trial.
    assert sum(t.state == TrialState.COMPLETE for t in report.trials) == 2 and len(report.trials) == 3
    assert any("marked FAIL" in line for line in quiet) and any("re-queued" in line for line in quiet)


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_ctrl_c_marks_the_trial_interrupted_and_the_next_command_resumes_it(write_search, monkeypatch, quiet):
    spec = load_search(write_search("kd", name="ctrl_c"))
    original = objective_module.TrialReporter.on_log
    seen: list[int] = []

    def interrupt_at_second_evaluation(self, record, step):
        original(self, record, step)
        if record.get("type") == "val":
            seen.append(step)
            if len(seen) == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(objective_module.TrialReporter, "on_log", interrupt_at_second_evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_search(spec, budget=spec.budget, log=quiet.append)
    monkeypatch.setattr(objective_module.TrialReporter, "on_log", original)

    report = run_search(spec, budget=spec.budget, log=quiet.append)
    first = report.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs[FAIL_REASON] == "interrupted"
    retry = next(t for t in report.trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE and retry.params == first.params
    assert retry.user_attrs["run_id"] == first.user_attrs["run_id"]  # same values, same run
    summary = RunDir(retry.user_attrs["run_dir"]).read_summary()
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 1 and summary["attempt"] == 2
    assert sorted(retry.intermediate_values) == [2, 3, 4]  # the evaluation count goes on after the resume
    assert sum(t.state == TrialState.COMPLETE for t in report.trials) == 2


@pytest.mark.slow  # default suite under 10 min on 2 cores; `make test-all` runs it
def test_stale_heartbeat_on_another_host_is_failed_and_retried(write_search, quiet):
    spec = load_search(write_search("kd", name="stale", space={ALPHA: "default"},
                                    resume={"heartbeat_interval": 1, "grace_period": 1, "max_retry": 1}))
    study = open_study(spec, resolve_url(spec.name), spec.name)
    number = _orphan(study, {"host": "another-machine", "pid": 1, "start": 0})
    study._storage.record_heartbeat(study.trials[number]._trial_id)
    time.sleep(2.2)  # past the grace period: the heartbeat is stale

    report = run_search(spec, budget=spec.budget, log=quiet.append)
    orphan = report.trials[number]
    assert orphan.state == TrialState.FAIL
    retry = next(t for t in report.trials if t.system_attrs.get("failed_trial") == number)
    assert retry.state == TrialState.COMPLETE and retry.params == orphan.params


def test_journal_trial_with_an_old_heartbeat_stamp_is_failed_and_retried(write_search, tmp_path, quiet):
    spec = load_search(write_search("kd", name="journal_stale", space={ALPHA: "default"},
                                    resume={"heartbeat_interval": 1, "grace_period": 5, "max_retry": 1}))
    url = f"journal:{tmp_path / 'journal.log'}"
    study = open_study(spec, url, spec.name)
    number = _orphan(study, {"host": "another-machine", "pid": 1, "start": 0})
    study._storage.set_trial_user_attr(study.trials[number]._trial_id, "heartbeat_at", time.time() - 60)

    report = run_search(spec, budget=spec.budget, storage=url, log=quiet.append)
    orphan = report.trials[number]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs[FAIL_REASON] == "stale"
    retry = next(t for t in report.trials if t.system_attrs.get("failed_trial") == number)
    assert retry.state == TrialState.COMPLETE and retry.params == orphan.params
    assert retry.user_attrs["heartbeat_at"] > time.time() - 60  # the journal worker stamped its own trial
