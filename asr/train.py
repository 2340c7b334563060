"""The training loop: CTC training of the acoustic model with validation and checkpoints.

``train(cfg)`` is a plain function (the CLI and the tests call it the same way). It leaves
``<output_dir>/model.pt`` (the best model by dev WER, self-contained for transcription),
``checkpoints/step-<step>.pt`` (everything to resume exactly, also mid-epoch; the newest few are
kept), ``config.yaml``, ``train.log``, ``steps.tsv`` (step, loss, learning rate of every step) and
TensorBoard scalars under ``tensorboard/``. Ctrl-C (SIGINT) finishes the current step, saves a
checkpoint and stops; ``trainer.resume=true`` continues where it stopped, bit for bit on CPUs (cuDNN's
and CUDA CTC's backward passes are not deterministic).
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from asr.checkpoint import inference_state, save_checkpoint
from asr.config import OptimizerKind, TrainConfig, to_yaml
from asr.data import BucketBatchSampler, SpeechDataset, collate, report_skipped
from asr.errors import TrainingError
from asr.kernels import compile_non_recurrent
from asr.model import AcousticModel
from asr.decoding import build_decoder
from asr.distributed import (
    Distributed, any_rank, check_same_on_all_ranks, cleanup, from_main, init_distributed, latest_checkpoint_on_all_ranks,
)
from asr.train_data import (
    drop_infeasible, initial_model, load_initial_weights, read_utterances, shared_extractor, shared_tokenizer, with_features_of,
)
from asr.train_step import train_step
from asr.train_setup import (
    Silent, attach_file_log, grad_scaler, ignore_sigint, lr_factor, open_step_log, resolve_device, resolve_precision, restore_rng_state,
    rng_state,
)
from asr.transcribe import recognize_dataset

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


@dataclass
class EpochResult:
    loss: float
    frames_per_second: float
    data_wait: float  # share of the epoch's training time spent waiting for batches
    dev_wer: float
    dev_cer: float


@dataclass
class EpochTotals:
    """Running sums of the current epoch (part of the checkpoint, so a resumed epoch reports the
    same averages as an uninterrupted one)."""

    loss: float = 0.0
    batches: int = 0
    frames: int = 0
    seconds: float = 0.0
    data_wait: float = 0.0  # seconds the loop waited for the loader (input pipeline too slow if large)


def train(cfg: TrainConfig) -> Path:
    """Train a model as ``cfg`` says; returns the path of the final ``model.pt``."""
    info = init_distributed(cfg.trainer.device)
    out_dir = Path(cfg.trainer.output_dir or f"exp/train-{datetime.now():%Y%m%d-%H%M%S}")
    if info.enabled and cfg.trainer.output_dir is None:
        out_dir = Path(from_main(str(out_dir), info))  # one folder, whatever second each rank started in
    file_log = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        file_log = attach_file_log(out_dir / "train.log")
    else:  # the other ranks only warn; rank 0 logs for the run
        logging.getLogger("asr").setLevel(logging.WARNING)
    try:
        log.info("output directory: %s (%d process%s)", out_dir.resolve(), info.world_size, "es" * info.enabled)
        return Trainer(cfg, out_dir, info).run()
    finally:
        if file_log is not None:
            logging.getLogger().removeHandler(file_log)
            file_log.close()
        cleanup(info)


class Trainer:
    """Holds the state of one training run; ``run()`` drives it epoch by epoch."""

    def __init__(self, cfg: TrainConfig, out_dir: Path, info: Distributed = Distributed()):
        found = latest_checkpoint_on_all_ranks(out_dir / CHECKPOINT_DIR, info) if cfg.trainer.resume else None
        resume_path, resume = found if found else (None, None)
        init = initial_model(cfg.trainer.init_from, out_dir) if resume is None and cfg.trainer.init_from else None
        start = resume or init  # the checkpoint whose tokenizer and features this run keeps
        if start is not None:
            cfg = with_features_of(cfg, start)
        if info.is_main:
            (out_dir / "config.yaml").write_text(to_yaml(cfg))
        self.cfg, self.out_dir, self.dist = cfg, out_dir, info
        self.accumulate = cfg.trainer.grad_accum_steps
        self.device = resolve_device(cfg.trainer.device, info.local_rank, info.world_size)
        self.amp_dtype = resolve_precision(cfg.trainer.precision, self.device)
        if cfg.trainer.num_threads:
            torch.set_num_threads(cfg.trainer.num_threads)
        random.seed(cfg.trainer.seed)
        torch.manual_seed(cfg.trainer.seed)
        self.bad_lines: list[str] = []  # manifest lines skipped (data.skip_bad)
        self.bad_utterances: set[int] = set()  # training utterances whose audio was unusable
        problems = self.bad_lines if cfg.data.skip_bad else None
        train_utts = read_utterances(cfg.data.train_manifest, "train", cfg.data, problems, drop_long=True)
        dev_utts = read_utterances(cfg.data.dev_manifest, "dev", cfg.data, problems, drop_long=False)
        self.tokenizer = shared_tokenizer(cfg, start, train_utts, info)
        self.extractor = shared_extractor(cfg, start, train_utts, info)
        self.model = AcousticModel(cfg.model, self.extractor.dim, self.tokenizer.vocab_size)
        if init is not None:
            load_initial_weights(self.model, init, cfg.trainer.init_from)
        self.model.to(self.device)
        if cfg.trainer.compile:
            compile_non_recurrent(self.model)
        self.train_model = self.model  # what training steps call: the DDP wrapper with several processes
        if info.enabled:
            # no device_ids: the step moves the features itself, and DDP would copy the CPU lengths to
            # the GPU, only for the model to copy them back (a wait each way); also copies rank 0's
            # initial weights to every rank
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model)
            torch.manual_seed(cfg.trainer.seed + 7919 * info.rank)  # a different dropout stream per rank
        log.info("model: %s parameters, vocabulary %d (blank included)", f"{self.model.num_parameters():,}", self.tokenizer.vocab_size)
        train_utts = drop_infeasible(train_utts, cfg, self.tokenizer, self.model)
        check_same_on_all_ranks((len(train_utts), round(sum(u.duration for u in train_utts), 3), len(dev_utts)),
                                "the training and dev utterances (count, seconds, dev count)", info)

        self.train_set = SpeechDataset(train_utts, self.extractor, self.tokenizer, cfg.augment, cfg.trainer.seed)
        self.dev_set = SpeechDataset(dev_utts, self.extractor, self.tokenizer)
        self.decoder = build_decoder(self.tokenizer, cfg.decode.to_options(), device=self.device)
        self.sampler = BucketBatchSampler(
            self.train_set.num_frames(), cfg.data.max_frames_per_batch, cfg.data.num_buckets, True, cfg.trainer.seed,
            cfg.data.length_jitter,
        )
        if info.enabled or self.accumulate > 1:
            self.sampler.set_shard(info.rank, info.world_size, self.accumulate)
        self.total_steps = cfg.trainer.epochs * (len(self.sampler) // self.accumulate)
        if self.total_steps == 0:
            raise TrainingError(
                f"{len(self.sampler.batches(0))} training batch(es) per epoch (data.max_frames_per_batch="
                f"{cfg.data.max_frames_per_batch}), fewer than one optimizer step takes: {info.world_size} process(es) x "
                f"trainer.grad_accum_steps={self.accumulate}; use smaller batches or fewer processes")
        self.optimizer = self._optimizer()
        o = cfg.optim
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, o.warmup_steps, o.decay, o.min_lr_ratio)
        )
        self.scaler = grad_scaler(self.device, self.amp_dtype)
        self.step, self.epoch, self.best, self.bad_epochs, self.skipped_steps = 0, 0, (math.inf, math.inf), 0, 0
        self.batch_in_epoch, self.totals, self.nonfinite_in_row = 0, EpochTotals(), 0
        self.stop_requested = False
        self.recent_wait = 0.0  # seconds waited for batches since the last TensorBoard point
        if resume is not None:
            self.model.load_state_dict(resume["model"]["state_dict"])
            self._restore(resume["training"])
            log.info("resumed from %s at epoch %d, step %d", resume_path, self.epoch + 1, self.step)
        if info.is_main:
            self.step_log = open_step_log(self.out_dir / "steps.tsv", self.step)
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        else:
            self.step_log, self.writer = Silent(), Silent()

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params = self.model.parameters()
        if OptimizerKind(o.name) is OptimizerKind.sgd:
            return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True, fused=True)
        # fused: one kernel over all parameters instead of a dozen small ops per tensor (CPU and CUDA)
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, fused=True)

    def _loader(self, dataset: SpeechDataset, sampler) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            # a private generator keeps worker seeding from consuming the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.cfg.trainer.seed),
            worker_init_fn=ignore_sigint if workers else None,
        )

    def run(self) -> Path:
        """Train to the end (or early stop), then return the best model's path. On SIGINT the
        current step is finished, a checkpoint saved, and KeyboardInterrupt raised."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._request_stop)
        try:
            return self._run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.step_log.close()
            self.writer.close()

    def _request_stop(self, signum, frame) -> None:
        if self.stop_requested:  # a second Ctrl-C: stop now, without a checkpoint
            raise KeyboardInterrupt
        log.warning("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop at once)")
        self.stop_requested = True

    def _run(self) -> Path:
        model_path = self.out_dir / "model.pt"
        while self.epoch < self.cfg.trainer.epochs:
            result = self._train_epoch()
            if result is None:  # interrupted or step limit: the epoch is not finished
                break
            self.epoch, self.batch_in_epoch, self.totals = self.epoch + 1, 0, EpochTotals()
            log.info(
                "epoch %d: loss %.4f, %.0f frames/s, data wait %.0f%%, dev WER %.2f CER %.2f", self.epoch,
                result.loss, result.frames_per_second, 100 * result.data_wait, result.dev_wer, result.dev_cer,
            )
            if result.data_wait > 0.2:
                log.warning("the loop waited %.0f%% of the epoch for batches: raise data.num_workers", 100 * result.data_wait)
            self.writer.add_scalar("dev/wer", result.dev_wer, self.step)
            self.writer.add_scalar("dev/cer", result.dev_cer, self.step)
            self.writer.add_scalar("train/frames_per_s", result.frames_per_second, self.step)
            self.writer.add_scalar("train/data_wait", result.data_wait, self.step)
            score = (result.dev_wer, result.dev_cer)
            self.bad_epochs = 0 if score < self.best else self.bad_epochs + 1
            if score <= self.best:  # on a tie, the model trained longer is kept
                self.best = score
                if self.dist.is_main:
                    save_checkpoint(inference_state(self.model, self.extractor, self.tokenizer), model_path)
                log.info("new best model (dev WER %.2f): %s", result.dev_wer, model_path)
            self._save_checkpoint()
            if self.cfg.trainer.patience and self.bad_epochs >= self.cfg.trainer.patience:
                log.info("early stopping: no dev WER improvement for %d epochs", self.bad_epochs)
                break
        if self.stop_requested:
            path = self._save_checkpoint()
            log.warning("interrupted at step %d: checkpoint %s; continue with trainer.resume=true", self.step, path)
            raise KeyboardInterrupt
        if self._step_limit_reached():
            log.info("stopping: trainer.max_steps=%d reached", self.cfg.trainer.max_steps)
            self._save_checkpoint()
        if self.dist.is_main and not model_path.exists():  # e.g. resumed after the last epoch
            save_checkpoint(inference_state(self.model, self.extractor, self.tokenizer), model_path)
        log.info("final model: %s (best dev WER %.2f CER %.2f)", model_path, *self.best)
        if self.bad_lines or self.bad_utterances or self.skipped_steps:
            log.warning("skipped: %d bad manifest lines, %d training utterances with unusable audio, %d non-finite steps",
                        len(self.bad_lines), len(self.bad_utterances), self.skipped_steps)
        return model_path

    def _train_epoch(self) -> EpochResult | None:
        """The rest of the current epoch (from ``batch_in_epoch`` when resumed mid-epoch) and its
        dev scores; None when it stopped early (interrupt or ``trainer.max_steps``)."""
        self.model.train()
        self.sampler.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
        loader = self._loader(self.train_set, self.sampler)
        totals, every = self.totals, self.cfg.trainer.checkpoint_every_steps
        start = time.perf_counter() - totals.seconds
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{self.cfg.trainer.epochs}", leave=False, mininterval=2,
                   disable=None if self.dist.is_main else True, initial=self.batch_in_epoch,
                   total=self.batch_in_epoch + len(self.sampler))
        micro: list = []
        ready = time.perf_counter()
        for batch in bar:
            waited = time.perf_counter() - ready
            totals.data_wait, self.recent_wait = totals.data_wait + waited, self.recent_wait + waited
            report_skipped(batch, self.cfg.data.skip_bad, self.bad_utterances)
            micro.append(batch)
            if len(micro) < self.accumulate:
                ready = time.perf_counter()
                continue
            if self._should_stop():
                return None
            loss = self._train_step(micro)
            self._log_data_wait()
            self.batch_in_epoch += len(micro)
            if loss is not None:
                totals.loss, totals.batches = totals.loss + loss, totals.batches + 1
            totals.frames += sum(b.num_frames for b in micro)
            totals.seconds = time.perf_counter() - start
            bar.set_postfix(loss=f"{totals.loss / max(1, totals.batches):.3f}", frames_s=f"{totals.frames / totals.seconds:.0f}",
                            wait=f"{totals.data_wait / totals.seconds:.0%}")
            micro = []
            ready = time.perf_counter()
            if every and self.step % every == 0:
                self._save_checkpoint()
        stop = self._should_stop()
        if self.stop_requested or (stop and self.batch_in_epoch < len(self.sampler.epoch_batches())):
            return None  # Ctrl-C after the last step too: checkpoint at once, score dev after resuming
        # checkpointed before scoring dev, which can take long: torchrun kills its workers 30 s after a
        # Ctrl-C, and a resume from here goes straight to scoring (the same file is rewritten after it)
        self._save_checkpoint()
        dev = None
        if self.dist.is_main:  # rank 0 scores dev; every rank takes the same decisions from it
            dev = recognize_dataset(
                self.model, self.dev_set, self.tokenizer, self.cfg.data.max_frames_per_batch, self.device,
                self.amp_dtype, decoder=self.decoder, skip_bad=self.cfg.data.skip_bad,
            )
            dev = (dev.wer, dev.cer)
        wer, cer = from_main(dev, self.dist)
        fps = totals.frames / max(totals.seconds, 1e-9) * self.dist.world_size
        return EpochResult(totals.loss / max(1, totals.batches), fps, totals.data_wait / max(totals.seconds, 1e-9), wer, cer)

    def _should_stop(self) -> bool:
        """Ctrl-C on any rank, or the step limit: all ranks agree, so none waits for the others."""
        self.stop_requested = any_rank(self.stop_requested, self.dist)
        return self.stop_requested or self._step_limit_reached()

    def _step_limit_reached(self) -> bool:
        return 0 < self.cfg.trainer.max_steps <= self.step

    def _train_step(self, micro: list) -> float | None:
        """One optimizer step over ``grad_accum_steps`` micro-batches (on each rank), then the
        schedule and logs; returns the loss (mean over micro-batches and ranks), or None when the
        step was skipped."""
        outcome = train_step(self.model, self.train_model, self.optimizer, self.scaler, micro,
                             self.amp_dtype, self.cfg.optim.clip_grad_norm, self.dist)
        if not outcome.finite and not self.scaler.is_enabled():
            self._count_nonfinite()
        self.nonfinite_in_row = 0 if outcome.finite else self.nonfinite_in_row
        self.scheduler.step()
        self.step += 1
        lr = self.scheduler.get_last_lr()[0]
        self.step_log.write(f"{self.step}\t{outcome.loss!r}\t{lr!r}\n")
        if self.step % self.cfg.trainer.log_every == 0:
            self.writer.add_scalar("train/loss", outcome.loss, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)
            self.writer.add_scalar("train/grad_norm", outcome.grad_norm, self.step)
        return outcome.loss if outcome.finite else None

    def _log_data_wait(self) -> None:
        """TensorBoard ``train/data_wait_ms``: the mean wait for batches per step over the last
        ``log_every`` steps (a loader that falls behind shows up here before the epoch ends)."""
        if self.step % self.cfg.trainer.log_every == 0:
            self.writer.add_scalar("train/data_wait_ms", 1000 * self.recent_wait / self.cfg.trainer.log_every, self.step)
            self.recent_wait = 0.0

    def _count_nonfinite(self) -> None:
        self.skipped_steps += 1
        self.nonfinite_in_row += 1
        log.warning("step %d: non-finite loss or gradient, step skipped (%d so far, %d in a row)",
                    self.step, self.skipped_steps, self.nonfinite_in_row)
        limit = self.cfg.trainer.max_nonfinite_steps
        if self.nonfinite_in_row >= limit:
            path = self._save_checkpoint()  # flushes steps.tsv too
            raise TrainingError(
                f"{limit} non-finite steps in a row at step {self.step} (trainer.max_nonfinite_steps): the learning "
                f"rate may be too high or the data broken; checkpoint saved to {path}"
            )

    def _save_checkpoint(self) -> Path | None:
        """Checkpoint the exact training state (mid-epoch too; rank 0 only); keep the newest few."""
        if not self.dist.is_main:
            return None
        directory = self.out_dir / CHECKPOINT_DIR
        self.step_log.flush()
        path = save_checkpoint(self._training_state(), directory / f"step-{self.step:09d}.pt")
        for old in sorted(directory.glob("step-*.pt"))[: -self.cfg.trainer.keep_checkpoints]:
            old.unlink()
        return path

    def _training_state(self) -> dict:
        state = inference_state(self.model, self.extractor, self.tokenizer)
        state["training"] = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "batch_order": BucketBatchSampler.ORDER_VERSION,
            "world_size": self.dist.world_size,
            "grad_accum_steps": self.accumulate,
            "epoch_totals": [self.totals.loss, self.totals.batches, self.totals.frames, self.totals.seconds,
                             self.totals.data_wait],
            "nonfinite_in_row": self.nonfinite_in_row,
            "best": list(self.best),
            "bad_epochs": self.bad_epochs,
            "skipped_steps": self.skipped_steps,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            **rng_state(self.device),
        }
        return state

    def _restore(self, training: dict) -> None:
        for group in training["optimizer"]["param_groups"]:  # checkpoints of older versions: unfused
            group["fused"] = self.optimizer.param_groups[0].get("fused")  # (set before loading: it places "step")
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        if training["scaler"]:  # empty from a run without loss scaling (e.g. bf16 before it was scaled)
            self.scaler.load_state_dict(training["scaler"])
        self.step, self.epoch = training["step"], training["epoch"]
        self.batch_in_epoch = training.get("batch_in_epoch", 0)  # absent in checkpoints of older versions
        if self.batch_in_epoch and training.get("batch_order") != BucketBatchSampler.ORDER_VERSION:
            log.warning("the checkpoint comes from an asr whose batches were ordered differently: the rest of "
                        "epoch %d skips %d batches of the new order, so some utterances are seen twice in it and "
                        "some not at all", self.epoch + 1, self.batch_in_epoch)
        world, accumulate = training.get("world_size", 1), training.get("grad_accum_steps", 1)
        if (world, accumulate) != (self.dist.world_size, self.accumulate):
            # the same place in the epoch's shared batch order, counted in this run's micro-batches
            steps_done = self.batch_in_epoch // accumulate  # optimizer steps into the epoch
            self.batch_in_epoch = steps_done * world * accumulate // (self.dist.world_size * self.accumulate) * self.accumulate
            log.warning("resuming %d process(es) x %d accumulation from a run of %d x %d: same position in the "
                        "epoch, no longer bit-identical to an uninterrupted run", self.dist.world_size,
                        self.accumulate, world, accumulate)
            if world * accumulate != self.dist.world_size * self.accumulate:
                keep = world * accumulate / self.dist.world_size
                log.warning("the global batch changes from %d to %d batches per step, and with it the steps per epoch "
                            "and the learning-rate schedule%s", world * accumulate, self.dist.world_size * self.accumulate,
                            f" (trainer.grad_accum_steps={keep:.0f} keeps it)" if keep == int(keep) else "")
        self.totals = EpochTotals(*training.get("epoch_totals", ()))
        self.nonfinite_in_row = training.get("nonfinite_in_row", 0)
        self.best, self.bad_epochs = tuple(training["best"]), training["bad_epochs"]
        self.skipped_steps = training["skipped_steps"]
        restore_rng_state(training, self.device, self.dist.rank, self.cfg.trainer.seed, self.step)
