"""Background work of a server process: a blocking job run in a worker thread every few seconds."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.to_thread

log = logging.getLogger(__name__)


async def every(seconds: float, job: Callable[[], object], failure: str) -> None:
    """Run ``job`` in a thread every ``seconds``, forever; a failed round logs ``failure`` and the
    next round runs as planned (a store hiccup must not stop the loop)."""
    while True:
        await anyio.sleep(seconds)
        try:
            await anyio.to_thread.run_sync(job)
        except Exception:
            log.exception(failure)
