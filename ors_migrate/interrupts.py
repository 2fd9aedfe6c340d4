"""Interrupts while HA pairs run in parallel. Ctrl-C, SIGTERM and SIGHUP normally end the run
where the main thread stands (`runner` turns SIGTERM and SIGHUP into KeyboardInterrupt). While
worker threads are acting on pairs the main thread only notes them instead: it must keep joining
the workers until each has ended its current action, so that the run lock, the transports and the
journal outlive every command the workers send. Once they have, the first interrupt is raised."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class NotedInterrupts:
    """How many stopping signals arrived. The handler only counts: printing or taking a lock
    from a signal handler could deadlock the main thread it interrupts."""

    count: int = 0

    def note(self, signum: int, frame: Any) -> None:
        self.count += 1


@contextmanager
def interrupts_noted() -> Iterator[NotedInterrupts]:
    """Within the block, stopping signals are counted rather than raised; the handlers in place
    before come back after it. Outside the main thread (where handlers cannot be set, and no
    signal arrives) nothing changes."""
    noted = NotedInterrupts()
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = {sig: signal.signal(sig, noted.note) for sig in STOPPING_SIGNALS}
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
