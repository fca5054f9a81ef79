"""Where a study lives: SQLite by default, any RDB URL, or Optuna's JournalStorage.

Why SQLite by default: a search is one file under ``results/hpo/<study>.db`` that
``optuna-dashboard`` opens as it is, survives a crash and needs no server. Many workers on
many machines need a server (``postgresql+psycopg2://…``) or a journal file on a shared
file system (``journal:/shared/hpo/<study>.log``).

Interrupted trials: an RDB storage gets Optuna's heartbeat (a thread per running trial
stamps it every ``heartbeat_interval`` seconds); a trial whose stamp is older than
``grace_period`` belongs to a dead worker, is marked FAIL by the next worker that looks and
re-queued with the same parameters (:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`).
JournalStorage has no native heartbeat; :mod:`benchmark.hpo.recovery` stamps those trials
itself.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from benchmark.errors import ConfigError

HPO_DIR_ENV = "MSD_HPO_DIR"
DEFAULT_HPO_DIR = "results/hpo"
JOURNAL_PREFIX = "journal:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_OPEN_ATTEMPTS = 3
_DRIVERS = {"postgresql": "psycopg2-binary", "mysql": "pymysql (URL mysql+pymysql://)"}


@dataclass(frozen=True)
class Heartbeat:
    """How fast a dead worker's trial is noticed, and how often it is retried."""

    interval_s: int = 10
    grace_s: int = 60
    max_retry: int = 2


def hpo_dir() -> Path:
    """``results/hpo`` (relative to the working directory) unless ``MSD_HPO_DIR`` is set."""
    return Path(os.environ.get(HPO_DIR_ENV) or DEFAULT_HPO_DIR).expanduser()


def check_study_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"Study name {name!r} must start with a letter or digit and use only letters, digits, '_', '.', '-' "
            "(it becomes a file name and a W&B group)."
        )
    return name


def default_url(study: str) -> str:
    return f"sqlite:///{hpo_dir() / f'{check_study_name(study)}.db'}"


def resolve_url(study: str, cli: str | None = None, from_file: str | None = None) -> str:
    """``--storage`` wins, then the search file's ``storage:``, then the SQLite default.

    ``{study}`` in a URL is replaced by the study name; a bare path ending in ``.db`` is a
    SQLite file, one ending in ``.log``/``.jsonl`` a journal file.
    """
    url = (cli or from_file or default_url(study)).replace("{study}", study)
    if "://" not in url and not url.startswith(JOURNAL_PREFIX):
        if url.endswith((".log", ".jsonl", ".journal")):
            url = JOURNAL_PREFIX + url
        elif url.endswith((".db", ".sqlite", ".sqlite3")):
            url = f"sqlite:///{url}"
        else:
            raise ConfigError(
                f"Storage {url!r} is neither a database URL (sqlite:///…, postgresql+psycopg2://…), "
                "a journal file (journal:PATH), nor a path ending in .db or .log."
            )
    return url


def kind(url: str) -> str:
    """``journal`` or ``rdb``."""
    return "journal" if url.startswith(JOURNAL_PREFIX) else "rdb"


def journal_path(url: str) -> Path:
    rest = url[len(JOURNAL_PREFIX):]
    return Path(rest[2:] if rest.startswith("///") else rest).expanduser()


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///"):]).expanduser()
    return None


def open_storage(url: str, heartbeat: Heartbeat | None = None) -> BaseStorage:
    """The storage for ``url``; RDB storages get the heartbeat and the stale-trial retry."""
    if kind(url) == "journal":
        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict = {}
    local = sqlite_path(url)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        # Several local workers share one file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"pool_pre_ping": True}
    hb = heartbeat or Heartbeat()
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=hb.interval_s, grace_period=hb.grace_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=hb.max_retry),
                )
        except ModuleNotFoundError as exc:
            scheme = url.split(":", 1)[0].split("+", 1)[0]
            need = _DRIVERS.get(scheme, exc.name)
            raise ConfigError(f"Storage {safe_url(url)} needs the database driver {exc.name!r}: pip install {need}.") from exc
        except Exception as exc:  # sqlalchemy errors: bad host/auth/database, or a schema race
            # Workers started together all create Optuna's tables in a fresh database; the
            # losers of that race see an integrity error once, then find the tables there.
            if attempt + 1 == _OPEN_ATTEMPTS:
                raise ConfigError(f"Cannot open the study storage {safe_url(url)}: {type(exc).__name__}: {exc}") from exc
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def safe_url(url: str) -> str:
    """The URL without its password, for messages and tables."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def lock_dir(url: str) -> Path:
    """Where local coordination locks for a study go: next to its file, else under hpo_dir."""
    local = sqlite_path(url) or (journal_path(url) if kind(url) == "journal" else None)
    return (local.parent if local is not None else hpo_dir()) / ".locks"
