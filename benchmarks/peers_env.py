"""Where the peers' Python lives: the environment ``make peers`` builds (``.peers-venv``), or ``$MPQ_PEERS_PYTHON``.

The peers (ModelOpt, NNCF, AutoRound) run in their own environment, never in mpq's; the benchmarks
that compare with them (plan_quality.py, real_model.py) start them as subprocesses of this Python.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / ".peers-venv" / "bin" / "python"


def peers_python(arg: str | None = None) -> str | None:
    """The first of ``arg``, ``$MPQ_PEERS_PYTHON`` and ``.peers-venv/bin/python`` that exists, else None."""
    for cand in (arg, os.environ.get("MPQ_PEERS_PYTHON"), str(DEFAULT)):
        if cand and Path(cand).is_file():
            return cand
    return None
