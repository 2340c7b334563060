"""The training loop: CTC training of the acoustic model with validation and checkpoints.

``train(cfg)`` is a plain function (the CLI and the tests call it the same way). It leaves
``<output_dir>/model.pt`` (the best model by dev WER, self-contained for transcription),
``checkpoints/step-<step>.pt`` (everything to resume exactly, also mid-epoch; the newest few are
kept), ``config.yaml``, ``train.log``, ``steps.tsv`` and TensorBoard scalars (:mod:`asr.run_log`).
Ctrl-C finishes the current step, saves a checkpoint and stops; ``trainer.resume=true`` continues
where it stopped, bit for bit on CPUs (cuDNN's and CUDA CTC's backward passes are not
deterministic). The run's components are built by :func:`asr.train_build.build_run`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from asr.checkpoint import inference_state, save_checkpoint
from asr.config import TrainConfig
from asr.data import report_skipped
from asr.distributed import cleanup, from_main, init_distributed
from asr.errors import TrainingError
from asr.run_log import RunLog, attach_file_log
from asr.stop import StopSignal
from asr.train_build import CHECKPOINT_DIR, Run, build_run, training_checkpoint
from asr.train_step import train_step

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> Path:
    """Train a model as ``cfg`` says; returns the path of the final ``model.pt``."""
    dist = init_distributed(cfg.trainer.device)
    out_dir = Path(cfg.trainer.output_dir or f"exp/train-{datetime.now():%Y%m%d-%H%M%S}")
    if dist.enabled and cfg.trainer.output_dir is None:
        out_dir = Path(from_main(str(out_dir), dist))  # one folder, whatever second each rank started in
    file_log = None
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        file_log = attach_file_log(out_dir / "train.log")
    else:  # the other ranks only warn; rank 0 logs for the run
        logging.getLogger("asr").setLevel(logging.WARNING)
    try:
        log.info("output directory: %s (%d process%s)", out_dir.resolve(), dist.world_size, "es" * dist.enabled)
        run = build_run(cfg, out_dir, dist)
        with StopSignal(run.cfg.trainer.max_steps, dist) as stop, \
                RunLog(out_dir, run.state.step, cfg.trainer.log_every, dist.is_main) as run_log:
            return fit(run, stop, run_log)
    finally:
        if file_log is not None:
            logging.getLogger().removeHandler(file_log)
            file_log.close()
        cleanup(dist)


def fit(run: Run, stop: StopSignal, run_log: RunLog) -> Path:
    """Epochs until the last one, early stopping or a stop signal; returns the best model's path.
    On Ctrl-C a checkpoint is saved and KeyboardInterrupt raised."""
    state, trainer = run.state, run.cfg.trainer
    model_path = run.out_dir / "model.pt"
    while state.epoch < trainer.epochs:
        if not train_epoch(run, stop, run_log):
            break  # interrupted or step limit: the epoch is not finished
        # checkpointed before scoring dev, which can take long: torchrun kills its workers 30 s after a
        # Ctrl-C, and a resume from here goes straight to scoring (the same file is rewritten after it)
        save_training_checkpoint(run, run_log)
        result, keep = state.finish_epoch(*validate(run), run.dist.world_size)
        log.info("epoch %d: loss %.4f, %.0f frames/s, data wait %.0f%%, dev WER %.2f CER %.2f", state.epoch,
                 result.loss, result.frames_per_second, 100 * result.data_wait, result.dev_wer, result.dev_cer)
        # on a CPU without workers, loading in turn with the step is the faster choice (Run.workers)
        if result.data_wait > 0.2 and (run.workers or run.device.type == "cuda"):
            log.warning("the loop waited %.0f%% of the epoch for batches: raise data.num_workers", 100 * result.data_wait)
        run_log.epoch(state.step, result)
        if keep:
            save_model(run, model_path)
            log.info("new best model (dev WER %.2f): %s", result.dev_wer, model_path)
        save_training_checkpoint(run, run_log)
        if trainer.patience and state.bad_epochs >= trainer.patience:
            log.info("early stopping: no dev WER improvement for %d epochs", state.bad_epochs)
            break
    if stop.requested or stop.limit_reached(state.step):
        path = save_training_checkpoint(run, run_log)
        if stop.requested:
            log.warning("interrupted at step %d: checkpoint %s; continue with trainer.resume=true", state.step, path)
            raise KeyboardInterrupt
        log.info("stopping: trainer.max_steps=%d reached", trainer.max_steps)
    if not model_path.exists():  # e.g. resumed after the last epoch
        save_model(run, model_path)
    log.info("final model: %s (best dev WER %.2f CER %.2f)", model_path, *state.best)
    if run.bad_lines or run.bad_utterances or state.skipped_steps:
        log.warning("skipped: %d bad manifest lines, %d training utterances with unusable audio, %d non-finite steps",
                    len(run.bad_lines), len(run.bad_utterances), state.skipped_steps)
    return model_path


def train_epoch(run: Run, stop: StopSignal, run_log: RunLog) -> bool:
    """The rest of the current epoch (from where a resumed run stopped); False when it stopped
    before the end (Ctrl-C, also after the last step: checkpoint at once, score dev after resuming)."""
    state, cfg = run.state, run.cfg
    run.model.train()
    loader = run.loader()
    start = time.perf_counter() - state.epoch_seconds
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.trainer.epochs}", leave=False, mininterval=2,
               disable=None if run.dist.is_main else True, initial=state.batch_in_epoch,
               total=state.batch_in_epoch + len(run.sampler))
    micro: list = []
    ready = time.perf_counter()
    for batch in bar:
        waited = time.perf_counter() - ready
        state.epoch_data_wait += waited
        run_log.waited(waited)
        report_skipped(batch, cfg.data.skip_bad, run.bad_utterances)
        micro.append(batch)
        if len(micro) == run.accumulate:
            if stop.check(state.step):
                return False
            optimizer_step(run, micro, run_log)
            state.batch_in_epoch += len(micro)
            state.epoch_frames += sum(b.num_frames for b in micro)
            state.epoch_seconds = time.perf_counter() - start
            seconds = state.epoch_seconds
            bar.set_postfix(loss=f"{state.epoch_loss / max(1, state.epoch_steps):.3f}",
                            frames_s=f"{state.epoch_frames / seconds:.0f}", wait=f"{state.epoch_data_wait / seconds:.0%}")
            micro = []
            if cfg.trainer.checkpoint_every_steps and state.step % cfg.trainer.checkpoint_every_steps == 0:
                save_training_checkpoint(run, run_log)
        ready = time.perf_counter()
    finished = state.batch_in_epoch >= len(run.sampler.epoch_batches())
    return not (stop.check(state.step) and (stop.requested or not finished))


def optimizer_step(run: Run, micro: list, run_log: RunLog) -> None:
    """One optimizer step over ``grad_accum_steps`` micro-batches, then the schedule and the logs;
    a non-finite loss or gradient skips the step (too many in a row stop the run)."""
    state = run.state
    outcome = train_step(run.model, run.train_model, run.optimizer, run.scaler, micro, run.amp_dtype,
                         run.cfg.optim.clip_grad_norm, run.dist)
    if outcome.finite:
        state.nonfinite_in_row = 0
        state.epoch_loss, state.epoch_steps = state.epoch_loss + outcome.loss, state.epoch_steps + 1
    elif not run.scaler.is_enabled():  # with loss scaling, the scaler handles fp16 overflow itself
        state.skipped_steps, state.nonfinite_in_row = state.skipped_steps + 1, state.nonfinite_in_row + 1
        log.warning("step %d: non-finite loss or gradient, step skipped (%d so far, %d in a row)",
                    state.step, state.skipped_steps, state.nonfinite_in_row)
        limit = run.cfg.trainer.max_nonfinite_steps
        if state.nonfinite_in_row >= limit:
            path = save_training_checkpoint(run, run_log)
            raise TrainingError(
                f"{limit} non-finite steps in a row at step {state.step} (trainer.max_nonfinite_steps): the learning "
                f"rate may be too high or the data broken; checkpoint saved to {path}")
    run.scheduler.step()
    state.step += 1
    run_log.step(state.step, outcome.loss, run.scheduler.get_last_lr()[0], outcome.grad_norm)


def validate(run: Run) -> tuple[float, float]:
    """Dev WER and CER: rank 0 scores, every rank takes the same decisions from its result."""
    dev = None
    if run.dist.is_main:
        rates = run.recognizer.evaluate(run.dev_utts, skip_bad=run.cfg.data.skip_bad)
        dev = (rates.wer, rates.cer)
    return from_main(dev, run.dist)


def save_model(run: Run, path: Path) -> None:
    if run.dist.is_main:
        save_checkpoint(inference_state(run.model, run.extractor, run.tokenizer), path)


def save_training_checkpoint(run: Run, run_log: RunLog) -> Path | None:
    """Checkpoint the exact training state (rank 0 only); keep the newest few."""
    if not run.dist.is_main:
        return None
    directory = run.out_dir / CHECKPOINT_DIR
    run_log.flush()
    state = inference_state(run.model, run.extractor, run.tokenizer) | {"training": training_checkpoint(run)}
    path = save_checkpoint(state, directory / f"step-{run.state.step:09d}.pt")
    for old in sorted(directory.glob("step-*.pt"))[: -run.cfg.trainer.keep_checkpoints]:
        old.unlink()
    return path
