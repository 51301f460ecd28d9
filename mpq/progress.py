"""A progress line on stderr for a step that takes more than about two seconds (quick steps stay silent)."""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

#: seconds a step runs before its line shows
AFTER_S = 2.0


@contextmanager
def step(label: str, *, after_s: float = AFTER_S, stream: TextIO | None = None) -> Iterator[None]:
    """Print ``label ...`` once the step has run ``after_s`` seconds, and its time when it ends."""
    out = stream or sys.stderr
    t0 = time.perf_counter()
    shown = threading.Event()

    def show() -> None:
        shown.set()
        print(f"{label} ...", file=out, flush=True)

    timer = threading.Timer(after_s, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if shown.is_set():
            print(f"{label}: done in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
