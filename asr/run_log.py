"""One training run's log: ``train.log``, ``steps.tsv`` (step, loss, learning rate of every step)
and TensorBoard scalars; rank 0 writes them, the other ranks only warn."""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from asr.train_state import EpochResult


class RunLog:
    """steps.tsv and TensorBoard for one run (a no-op off rank 0)."""

    def __init__(self, out_dir: Path, step: int, log_every: int, enabled: bool):
        self.enabled, self.log_every = enabled, log_every
        self.recent_wait = 0.0  # seconds waited for batches since the last TensorBoard point
        if enabled:
            self.steps = _open_step_log(out_dir / "steps.tsv", step)
            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.steps.close()
            self.writer.close()

    def waited(self, seconds: float) -> None:
        self.recent_wait += seconds

    def step(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        """Every step's loss and learning rate in steps.tsv; every ``log_every`` steps the loss,
        learning rate, gradient norm and mean wait for batches per step in TensorBoard (a loader
        that falls behind shows up there before the epoch ends)."""
        if not self.enabled:
            return
        self.steps.write(f"{step}\t{loss!r}\t{lr!r}\n")
        if step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/grad_norm", grad_norm, step)
            self.writer.add_scalar("train/data_wait_ms", 1000 * self.recent_wait / self.log_every, step)
            self.recent_wait = 0.0

    def epoch(self, step: int, result: EpochResult) -> None:
        if self.enabled:
            self.writer.add_scalar("dev/wer", result.dev_wer, step)
            self.writer.add_scalar("dev/cer", result.dev_cer, step)
            self.writer.add_scalar("train/frames_per_s", result.frames_per_second, step)
            self.writer.add_scalar("train/data_wait", result.data_wait, step)

    def flush(self) -> None:
        if self.enabled:
            self.steps.flush()


def _open_step_log(path: Path, step: int):
    """``steps.tsv`` kept to the first ``step`` steps, so a resumed run's log holds each step
    once, as an uninterrupted run's does."""
    kept = []
    if step and path.exists():
        kept = [line for line in path.read_text().splitlines(keepends=True) if line.split("\t")[0].isdigit()
                and int(line.split("\t")[0]) <= step and line.endswith("\n")]
    log_file = open(path, "w", buffering=1 << 16)
    log_file.write("step\tloss\tlr\n")
    log_file.writelines(kept)
    return log_file


def attach_file_log(path: Path) -> logging.Handler:
    """Copy the run's log records (INFO and up) to ``path``."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
