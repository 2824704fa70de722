"""Long operations (a training, a forget) in a process whose libraries are loaded.

A process that has imported pandas, scikit-learn and LightGBM holds a few hundred thousand
objects that live as long as it does. Python's collector walks every one of them on each full
pass, 0.15-0.3 s each: a second-long forget paid a third of its time for them. ``frozen_heap``
freezes what is alive when the operation starts (``gc.freeze``) and unfreezes it at the end, so
the passes during the operation walk only what it made. Nothing is collected less: garbage
made during the operation is collected as before, and the frozen objects rejoin the heap after.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the objects alive now for the block; nested (already frozen), it does nothing."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
