"""Ctrl-C (SIGINT) and SIGTERM during training: finish the current step, checkpoint, then stop.

An interrupt in the middle of a step would leave a half-updated model (BN statistics moved, weights
not); deferring it to the step boundary makes the checkpoint exactly the state after a whole step.
A second interrupt stops at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DeferredInterrupt:
    """Context manager: while active, SIGINT/SIGTERM set `requested` instead of raising."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
