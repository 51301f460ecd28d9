"""Pausing Python's cyclic garbage collector while a big document becomes objects, or objects become one."""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    Parsing or writing a document allocates a container per layer and option (none cyclic), and each
    collection would walk all of them again; a full collection, which a few thousand such allocations
    set off, walks every object of the process. Free what the block built before it ends: objects
    still alive when collection resumes are walked by the next collection of the youngest generation.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
