"""Optional dependencies: import one, or fail with the ``pip install mpq-planner[EXTRA]`` that brings it.

The core install plans, applies and exports; serving, Hugging Face loading, plotting and Captum's
LRP live in extras (see pyproject.toml). Code behind an extra imports its library through
:func:`require`, so a missing extra is one clear error instead of a ``ModuleNotFoundError``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MpqError

#: Which extra brings each optional top-level module.
EXTRAS = {
    "transformers": "hf",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "alembic": "serve",
    "matplotlib": "plot",
    "captum": "lrp",
    "psycopg2": "postgres",
}


class MissingExtra(MpqError, ImportError):
    """A feature needs a library from an extra that is not installed; the message names the extra."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``) for ``feature``, or raise :class:`MissingExtra`."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != top:
            raise  # the library is there but one of its own dependencies is broken: show the real error
        extra = EXTRAS.get(top)
        hint = f"pip install 'mpq-planner[{extra}]'" if extra else f"pip install {top}"
        raise MissingExtra(f"{feature} needs {top}, which is not installed: {hint}") from None
