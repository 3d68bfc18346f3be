"""Deterministic crash points for the fault-injection tests (test-only; off in production).

Setting ``DAPI_CONFIG_FAILPOINT=name[,name...]`` in a process's environment makes that process
kill itself with SIGKILL the first time it reaches a named point, like etcd's failpoints: the
tests then check that the next start recovers. The variable is read once at import; when it is
unset, :func:`hit` is one membership test on an empty frozenset.

Named points (grep for ``hit("`` to find the call sites):

- ``commit.before_ack``: a write transaction committed, the caller has not yet been told;
- ``backup.mid_copy``: the backup copy is written to its temp file, not yet verified or synced;
- ``backup.before_rename``: the verified, fsynced temp file is about to be renamed into place;
- ``restore.mid_copy``: a restore has copied part of the backup into the live file;
- ``recover.mid_quarantine``: some of a damaged file's companions are moved aside, not all;
- ``recover.before_swap``: the damaged file is aside, the restored copy not yet renamed in;
- ``serve.worker_start``: a worker of ``serve --workers N`` has just been forked (every start
  of every worker dies: the supervisor's guard against a restart loop);
- ``legacy.mid_migration``: for the legacy importer (:mod:`dapi_config.legacy`) to call between
  its steps.
"""

from __future__ import annotations

import os
import signal

from dapi_config.settings import FAILPOINT_ENV, failpoints_from_process_env

ENV_VAR = FAILPOINT_ENV

_ACTIVE: frozenset[str] = failpoints_from_process_env()


def hit(name: str) -> None:
    """Kill this process with SIGKILL when ``name`` is an active fail point; else do nothing."""
    if name in _ACTIVE:
        # SIGKILL, not sys.exit: no finally blocks, no atexit, no flush -- exactly a crash.
        os.kill(os.getpid(), signal.SIGKILL)


def active() -> frozenset[str]:
    """The fail points armed in this process (empty in production)."""
    return _ACTIVE
