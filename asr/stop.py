"""When a training run stops early: Ctrl-C on any rank, or ``trainer.max_steps`` reached; every
rank takes the same decision at the same step, so none waits for the others."""

from __future__ import annotations

import logging
import signal
import threading

from asr.distributed import Distributed, any_rank

log = logging.getLogger(__name__)


class StopSignal:
    """While entered, Ctrl-C (SIGINT) asks the run to finish its step, checkpoint and stop; a
    second Ctrl-C stops at once."""

    def __init__(self, max_steps: int, dist: Distributed):
        self.max_steps, self.dist = max_steps, dist
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _interrupt(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        log.warning("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop at once)")
        self.requested = True

    def limit_reached(self, step: int) -> bool:
        return 0 < self.max_steps <= step

    def check(self, step: int) -> bool:
        """Stop now? Agreed across ranks (a collective: every rank calls it at the same points)."""
        self.requested = any_rank(self.requested, self.dist)
        return self.requested or self.limit_reached(step)


def ignore_sigint(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which finishes its step and checkpoints;
    otherwise a worker dies on the signal and the next fetch fails before the checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
