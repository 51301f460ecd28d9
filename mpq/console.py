"""What mpq shows a person while it works: log lines under the ``mpq`` logger and progress bars.

Both go to stderr, so stdout carries only a command's output (a table, or the document with ``-o -``).
``mpq -v`` shows debug lines, ``mpq -q`` hides progress bars and info lines. Bars switch themselves
off when stderr is not a terminal (tqdm's ``disable=None``) and stay on screen when done, so the
elapsed time remains visible.
"""
from __future__ import annotations

import logging
import sys
from typing import Iterable, Optional

LOG = logging.getLogger("mpq")

_state = {"quiet": False}


def configure(verbosity: int = 0) -> None:
    """``verbosity`` -1 (``-q``): warnings only, no bars; 0: info; 1 or more (``-v``): debug."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    _state["quiet"] = verbosity < 0
    LOG.setLevel(level)
    if not any(getattr(h, "_mpq_console", False) for h in LOG.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._mpq_console = True  # type: ignore[attr-defined]
        LOG.addHandler(handler)
        LOG.propagate = False
    for h in LOG.handlers:
        if getattr(h, "_mpq_console", False):
            h.stream = sys.stderr
            h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"))


def bar(iterable: Optional[Iterable] = None, *, total: Optional[float] = None, desc: str = "", unit: str = "it",
        quiet: bool = False):
    """A tqdm progress bar on stderr: off when ``quiet``, after ``mpq -q``, or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    disable = True if quiet or _state["quiet"] else None
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=True, dynamic_ncols=True, file=sys.stderr)


class SearchBar:
    """A ``progress(fraction, best_plan)`` callback for searches, drawn as a bar of ``total`` trials."""

    def __init__(self, total: int, desc: str = "search", quiet: bool = False, unit: str = "trial"):
        self._bar = bar(total=total, desc=desc, unit=unit, quiet=quiet)
        self.total, self.done = total, 0

    def __call__(self, fraction: float, best=None) -> None:
        done = round(fraction * self.total)
        if done > self.done:
            self._bar.update(done - self.done)
            self.done = done
        if best is not None:
            self._bar.set_postfix(bytes=best.totals.bytes, distortion=f"{best.totals.distortion:.4g}", refresh=False)

    def close(self) -> None:
        self._bar.close()
