"""Open an Optuna storage by URL, with heartbeats so that a dead worker's trial is failed and retried.

``sqlite:///search.db`` or ``journal:///search.log`` serve several processes on one machine;
``postgresql://user:password@host/db`` serves many machines. Heartbeats need an RDB storage
(SQLite, PostgreSQL, MySQL): Optuna's journal storage has none, so a killed worker's trial there
stays RUNNING until someone fails it.
"""
from __future__ import annotations

import inspect
from typing import Optional

from mpq.dburl import with_installed_driver
from mpq.errors import MpqError

#: Seconds between heartbeats of a running trial; a trial silent for ``GRACE_FACTOR`` times this is failed.
DEFAULT_HEARTBEAT_S = 20
GRACE_FACTOR = 3
#: How many times one trial's parameters are retried after its worker died.
MAX_RETRY = 3


class StorageUnreachable(MpqError):
    """The study storage cannot be opened; the message names the URL with its password masked."""


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to print and log."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        head, sep, tail = url.partition("://")
        if sep and "@" in tail:
            creds, _, host = tail.rpartition("@")
            user = creds.split(":", 1)[0]
            return f"{head}://{user}:***@{host}"
        return url


def _scrub(text: str, url: str) -> str:
    """Remove the password of ``url`` from a driver's message, in case the driver echoes it."""
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:
        password = None
    return text.replace(password, "***") if password else text


def retry_callback(max_retry: int = MAX_RETRY):
    """Optuna's callback that enqueues a failed trial's parameters again, recording ``failed_trial`` on the copy."""
    import warnings

    import optuna

    # Optuna >= 4.9 names it RetryHeartbeatStaleTrialCallback
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=max_retry)


def open_storage(url: str, *, heartbeat_s: Optional[int] = DEFAULT_HEARTBEAT_S, max_retry: int = MAX_RETRY):
    """An Optuna storage for ``url``; RDB storages get heartbeats and retry the trials of dead workers."""
    import warnings

    import optuna

    if not isinstance(url, str) or "://" not in url:
        raise StorageUnreachable(
            f"storage {url!r} is not a URL; use e.g. sqlite:///search.db, journal:///search.log "
            "or postgresql://user:password@host:5432/db"
        )
    masked = mask_url(url)
    if url.startswith("journal:"):
        # as SQLite's URLs: journal:///relative/file.log, journal:////absolute/file.log
        if not url.startswith("journal:///") or len(url) == len("journal:///"):
            raise StorageUnreachable(f"storage {masked!r}: a journal storage is journal:///FILE (relative) or journal:////FILE (absolute)")
        path = url[len("journal:///"):]
        try:
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(path))
        except (OSError, ValueError) as e:
            raise StorageUnreachable(f"cannot open the study storage {masked}: {e}") from None
    url = with_installed_driver(url)
    kwargs: dict = {}
    if heartbeat_s:
        retry = retry_callback(max_retry)
        stale_arg = (
            "heartbeat_stale_trial_callback"
            if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
            else "failed_trial_callback"
        )
        kwargs = {"heartbeat_interval": int(heartbeat_s), "grace_period": int(heartbeat_s) * GRACE_FACTOR, stale_arg: retry}
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as e:
        raise StorageUnreachable(
            f"cannot open the study storage {masked}: its database driver is not installed ({e.__cause__ or e}); "
            "for PostgreSQL install mpq-planner[postgres]"
        ) from None
    except Exception as e:  # sqlalchemy / driver errors: unreachable host, bad credentials, bad URL
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()
        reason = reason[0] if reason else type(e).__name__
        raise StorageUnreachable(f"cannot reach the study storage {masked}: {_scrub(reason, url)}") from None
