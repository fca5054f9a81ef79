"""Interrupted trials: marked FAIL with a reason, then re-queued with the same parameters.

Why not leave them: a trial left RUNNING by a killed worker would count against the budget
forever and hide that the search lost work; silently forgetting it would bias the search
against whatever it was trying. Three ways a trial is interrupted, all handled here:

* **Ctrl-C / SIGTERM** in the worker: the objective records ``fail_reason=interrupted``
  before Optuna marks the trial FAIL.
* **The worker died** (kill -9, OOM, machine lost): the trial stays RUNNING. A worker on the
  same host sees at once that the recorded owner process is gone (pid + start time); on
  another host, RDB storages rely on Optuna's heartbeat (``grace_period`` seconds) and journal
  storages on the ``heartbeat_at`` stamp that :class:`OwnerHeartbeat` writes.
* In every case the next ``msd hpo run`` re-queues the failed trial once per ``max_retry``
  as a WAITING trial with the same parameters (Optuna's ``failed_trial``/``retry_history``
  system attributes). Same parameters give the same run id, so the run resumes from its last
  checkpoint instead of starting over.
"""

from __future__ import annotations

import threading
import time
import warnings

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from benchmark.tracking.liveness import owner_alive, owner_record  # noqa: F401 - the suite's one liveness check

OWNER = "owner"
FAIL_REASON = "fail_reason"
HEARTBEAT_AT = "heartbeat_at"
RETRYABLE = (None, "interrupted", "dead_owner", "stale")  # None: the worker died before saying why
NOT_COUNTED = ("interrupted", "dead_owner", "stale", "surplus")


def is_retryable_failure(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON) in RETRYABLE


def counts_against_budget(trial: FrozenTrial) -> bool:
    """Trials that used (or are using) budget: finished ones and the ones running or queued.
    Interrupted trials do not: their retry does."""
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get(FAIL_REASON) not in (*NOT_COUNTED, None)
    return True


def recover(study: optuna.Study, *, max_retry: int, grace_s: float, journal: bool) -> list[str]:
    """Fail the trials of dead workers and re-queue every interrupted trial not yet retried."""
    messages: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat; a no-op for journal storages
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive = owner_alive(trial.user_attrs.get(OWNER))
        stamp = trial.user_attrs.get(HEARTBEAT_AT)
        if alive is False:
            reason = "dead_owner"
        elif alive is None and journal and stamp is not None and now - float(stamp) > grace_s:
            reason = "stale"
        else:
            continue
        if _fail(study, trial, reason):
            messages.append(f"trial {trial.number} was RUNNING for a worker that is gone ({reason}): marked FAIL")
    retried = _retried_numbers(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.number in retried or not is_retryable_failure(trial):
            continue
        if len(trial.system_attrs.get("retry_history", [])) >= max_retry:
            messages.append(f"trial {trial.number} failed {max_retry + 1} times when interrupted; not retried again")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry(study, trial)
        messages.append(f"trial {trial.number} ({trial.user_attrs.get(FAIL_REASON) or 'worker died'}) re-queued "
                        f"with the same parameters; its run resumes from its last checkpoint")
    return messages


class OwnerHeartbeat:
    """Stamp ``heartbeat_at`` on a running trial every ``interval_s`` (journal storages only:
    RDB storages have Optuna's own heartbeat)."""

    def __init__(self, trial: optuna.Trial, interval_s: float) -> None:
        self.trial, self.interval_s = trial, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"hpo-heartbeat-{trial.number}")

    def __enter__(self) -> OwnerHeartbeat:
        self.trial.set_user_attr(HEARTBEAT_AT, time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.trial.set_user_attr(HEARTBEAT_AT, time.time())
            except Exception:  # noqa: BLE001 - the trial finished between the wait and the stamp
                return


def _fail(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
        return bool(storage.set_trial_state_values(trial._trial_id, TrialState.FAIL))
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False  # another worker finished or failed it first


def _retried_numbers(study: optuna.Study) -> set[int]:
    numbers: set[int] = set()
    for trial in study.get_trials(deepcopy=False):
        numbers.update(int(n) for n in trial.system_attrs.get("retry_history", []))
    return numbers
