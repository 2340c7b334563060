"""Everything a training run starts with, built in one place (:func:`build_run`): manifests read,
the tokenizer and the feature statistics (computed by rank 0 and shared with the other ranks, or
taken from the checkpoint being resumed or fine-tuned), the model (with a fine-tuning run's
initial weights), the optimizer and its learning-rate schedule, the batch sampler, and the
training state of the checkpoint being resumed."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.checkpoint import config_from_dict, config_to_dict, load_checkpoint
from asr.config import DataConfig, DecayKind, OptimizerKind, TrainConfig, to_yaml
from asr.data import BucketBatchSampler, SpeechDataset, Utterance, collate, read_manifest
from asr.devices import grad_scaler, resolve_device, resolve_precision
from asr.distributed import Distributed, check_same_on_all_ranks, from_main, latest_checkpoint_on_all_ranks
from asr.errors import AudioError, CheckpointError, ConfigError, TrainingError
from asr.features import FeatureConfig, FeatureExtractor, feature_stats
from asr.kernels import compile_non_recurrent
from asr.model import AcousticModel
from asr.stop import ignore_sigint
from asr.tokenizer import Tokenizer, tokenizer_from_dict, train_tokenizer
from asr.train_state import TrainState, restore_rng_state, rng_state
from asr.transcribe import Recognizer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


@dataclass
class Run:
    """A training run's components; ``state`` is what it has done so far."""

    cfg: TrainConfig
    out_dir: Path
    dist: Distributed
    device: torch.device
    amp_dtype: torch.dtype  # float32: no autocast
    tokenizer: Tokenizer
    extractor: FeatureExtractor
    model: AcousticModel
    train_model: torch.nn.Module  # what the batches go through: the model, or its DDP wrapper
    train_set: SpeechDataset
    dev_utts: list[Utterance]
    recognizer: Recognizer  # scores the dev set with the model being trained
    sampler: BucketBatchSampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    state: TrainState = field(default_factory=TrainState)
    bad_lines: list[str] = field(default_factory=list)  # manifest lines skipped (data.skip_bad)
    bad_utterances: set[int] = field(default_factory=set)  # training utterances whose audio was unusable

    @property
    def accumulate(self) -> int:
        return self.cfg.trainer.grad_accum_steps

    @property
    def workers(self) -> int:
        return loader_workers(self.cfg.data.num_workers, self.device)

    def loader(self) -> DataLoader:
        """The training batches of the current epoch from where it stands."""
        self.sampler.set_epoch(self.state.epoch, start_batch=self.state.batch_in_epoch)
        workers = self.workers
        return DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate, num_workers=workers,
                          pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None,
                          # a private generator keeps worker seeding from consuming the global RNG (exact resume)
                          generator=torch.Generator().manual_seed(self.cfg.trainer.seed),
                          worker_init_fn=ignore_sigint if workers else None)


def loader_workers(requested: int, device: torch.device, cores: int | None = None) -> int:
    """Loader worker processes: ``requested`` (``data.num_workers``), or for -1 (auto) one beside a
    GPU, none on a CPU of 4 cores or fewer (there a worker's augmentation takes a core from the
    step's threads and the whole loop runs slower, docs/PERFORMANCE.md), else one."""
    if requested >= 0:
        return requested
    cores = (os.cpu_count() or 1) if cores is None else cores
    return 1 if device.type == "cuda" or cores > 4 else 0


def audio_cache_mb(data: DataConfig, device: torch.device) -> float:
    """The training set's audio cache (``data.audio_cache_mb``), kept only where the training process
    loads its own batches: loader workers start afresh each epoch, and would each fill one."""
    return data.audio_cache_mb if loader_workers(data.num_workers, device) == 0 else 0.0


def build_run(cfg: TrainConfig, out_dir: Path, dist: Distributed) -> Run:
    """Every component of a run, resumed from the newest checkpoint with ``trainer.resume``."""
    found = latest_checkpoint_on_all_ranks(out_dir / CHECKPOINT_DIR, dist) if cfg.trainer.resume else None
    resume_path, resume = found if found else (None, None)
    init = initial_model(cfg.trainer.init_from, out_dir) if resume is None and cfg.trainer.init_from else None
    start = resume or init  # the checkpoint whose tokenizer and features this run keeps
    if start is not None:
        cfg = with_features_of(cfg, start)
    if dist.is_main:
        (out_dir / "config.yaml").write_text(to_yaml(cfg))
    device = resolve_device(cfg.trainer.device, dist.local_rank, dist.world_size)
    amp_dtype = resolve_precision(cfg.trainer.precision, device)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    random.seed(cfg.trainer.seed)
    torch.manual_seed(cfg.trainer.seed)
    bad_lines: list[str] = []
    problems = bad_lines if cfg.data.skip_bad else None
    train_utts = read_utterances(cfg.data.train_manifest, "train", cfg.data, problems, drop_long=True)
    dev_utts = read_utterances(cfg.data.dev_manifest, "dev", cfg.data, problems, drop_long=False)
    tokenizer = shared_tokenizer(cfg, start, train_utts, dist)
    extractor = shared_extractor(cfg, start, train_utts, dist)
    model, train_model = build_model(cfg, extractor.dim, tokenizer.vocab_size, device, dist, init)
    train_utts = drop_infeasible(train_utts, cfg, tokenizer, model)
    check_same_on_all_ranks((len(train_utts), round(sum(u.duration for u in train_utts), 3), len(dev_utts)),
                            "the training and dev utterances (count, seconds, dev count)", dist)
    train_set = SpeechDataset(train_utts, extractor, tokenizer, cfg.augment, cfg.trainer.seed,
                              audio_cache_mb(cfg.data, device))
    recognizer = Recognizer(model, extractor, tokenizer, str(device), cfg.decode, amp_dtype,
                            max_frames=cfg.data.max_frames_per_batch)
    sampler = BucketBatchSampler(train_set.num_frames(), cfg.data.max_frames_per_batch, cfg.data.num_buckets, True,
                                 cfg.trainer.seed, cfg.data.length_jitter)
    optimizer, scheduler = build_optimizer(cfg, model, sampler, dist)
    run = Run(cfg, out_dir, dist, device, amp_dtype, tokenizer, extractor, model, train_model, train_set, dev_utts,
              recognizer, sampler, optimizer, scheduler, grad_scaler(device, amp_dtype), bad_lines=bad_lines)
    if resume is not None:
        model.load_state_dict(resume["model"]["state_dict"])
        restore_training(run, resume["training"])
        log.info("resumed from %s at epoch %d, step %d", resume_path, run.state.epoch + 1, run.state.step)
    return run


def build_model(cfg: TrainConfig, input_dim: int, vocab_size: int, device: torch.device, dist: Distributed,
                init: dict | None) -> tuple[AcousticModel, torch.nn.Module]:
    """The model (with a fine-tuning run's initial weights) on ``device``, and what the batches go
    through: the model itself, or with several processes its DistributedDataParallel wrapper."""
    model = AcousticModel(cfg.model, input_dim, vocab_size)
    if init is not None:
        load_initial_weights(model, init, cfg.trainer.init_from)
    model.to(device)
    if cfg.trainer.compile:
        compile_non_recurrent(model)
    train_model: torch.nn.Module = model
    if dist.enabled:
        # no device_ids: the step moves the features itself, and DDP would copy the CPU lengths to
        # the GPU, only for the model to copy them back (a wait each way); also copies rank 0's
        # initial weights to every rank
        train_model = torch.nn.parallel.DistributedDataParallel(model)
        torch.manual_seed(cfg.trainer.seed + 7919 * dist.rank)  # a different dropout stream per rank
    log.info("model: %s parameters, vocabulary %d (blank included)", f"{model.num_parameters():,}", vocab_size)
    return model, train_model


def build_optimizer(cfg: TrainConfig, model: AcousticModel, sampler: BucketBatchSampler,
                    dist: Distributed) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer (fused: one kernel over all parameters) and its warmup-then-decay schedule
    over the run's optimizer steps; the sampler learns which share of each step is this rank's."""
    o, accumulate = cfg.optim, cfg.trainer.grad_accum_steps
    if dist.enabled or accumulate > 1:
        sampler.set_shard(dist.rank, dist.world_size, accumulate)
    total_steps = cfg.trainer.epochs * (len(sampler) // accumulate)
    if total_steps == 0:
        raise TrainingError(
            f"{len(sampler.batches(0))} training batch(es) per epoch (data.max_frames_per_batch="
            f"{cfg.data.max_frames_per_batch}), fewer than one optimizer step takes: {dist.world_size} process(es) x "
            f"trainer.grad_accum_steps={accumulate}; use smaller batches or fewer processes")
    if OptimizerKind(o.name) is OptimizerKind.sgd:
        optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                    nesterov=True, fused=True)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, o.warmup_steps, o.decay, o.min_lr_ratio))
    return optimizer, scheduler


def lr_factor(step: int, total_steps: int, warmup: int, decay: DecayKind, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine or exponential decay down to ``min_ratio`` at the end."""
    if step < warmup:
        return (step + 1) / warmup
    decay = DecayKind(decay)
    if decay is DecayKind.none:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if decay is DecayKind.cosine:
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio**progress


def training_checkpoint(run: Run) -> dict:
    """The ``training`` part of a checkpoint: everything to resume exactly, also mid-epoch."""
    return {"state": run.state.to_dict(), "batch_order": BucketBatchSampler.ORDER_VERSION,
            "world_size": run.dist.world_size, "grad_accum_steps": run.accumulate,
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(), **rng_state(run.device)}


def restore_training(run: Run, training: dict) -> None:
    """Continue ``run`` from the ``training`` part of a checkpoint."""
    run.optimizer.load_state_dict(training["optimizer"])
    run.scheduler.load_state_dict(training["scheduler"])
    if training["scaler"]:  # empty from a run without loss scaling
        run.scaler.load_state_dict(training["scaler"])
    state = run.state = TrainState.from_dict(training["state"])
    if state.batch_in_epoch and training["batch_order"] != BucketBatchSampler.ORDER_VERSION:
        log.warning("the checkpoint comes from an asr whose batches were ordered differently: the rest of "
                    "epoch %d skips %d batches of the new order, so some utterances are seen twice in it and "
                    "some not at all", state.epoch + 1, state.batch_in_epoch)
    state.move_to_world(training["world_size"], training["grad_accum_steps"], run.dist.world_size, run.accumulate)
    restore_rng_state(training, run.device, run.dist.rank, run.cfg.trainer.seed, state.step)


def read_utterances(manifest: str, name: str, data: DataConfig, problems: list[str] | None,
                    drop_long: bool) -> list[Utterance]:
    """``manifest``'s utterances (bad lines appended to ``problems`` when given, else an error),
    without those over ``data.max_duration`` if ``drop_long``."""
    utts = read_manifest(manifest, problems=problems)
    if drop_long:
        kept = [u for u in utts if u.duration <= data.max_duration]
        if len(kept) < len(utts):
            log.warning("dropped %d %s utterances longer than data.max_duration=%ss", len(utts) - len(kept), name,
                        data.max_duration)
        utts = kept
    log.info("%s: %d utterances, %.2f hours", name, len(utts), sum(u.duration for u in utts) / 3600)
    return utts


def initial_model(path: str, out_dir: Path) -> dict:
    """The checkpoint named by ``trainer.init_from``, loaded (a fine-tuning run starts from it)."""
    if Path(path).resolve() == (out_dir / "model.pt").resolve():
        raise ConfigError(f"trainer.init_from={path}: is this run's own output, which training would overwrite; "
                          "copy it elsewhere or choose another trainer.output_dir")
    try:
        state = load_checkpoint(path)
        config_from_dict(FeatureConfig, state["features"]["config"])
        tokenizer_from_dict(state["tokenizer"])
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"trainer.init_from={path}: {str(exc).removeprefix(f'{path}: ')}") from None
    log.info("initial weights, tokenizer and feature settings: %s (fine-tuning)", path)
    return state


def with_features_of(cfg: TrainConfig, state: dict) -> TrainConfig:
    """``cfg`` with the feature settings of the checkpoint a run starts from (a model only
    understands the features it was trained on)."""
    features = config_from_dict(FeatureConfig, state["features"]["config"])
    if features != cfg.features:
        log.info("features from the initial model: %s", config_to_dict(features))
    return dataclasses.replace(cfg, features=features)


def load_initial_weights(model: AcousticModel, state: dict, path: str) -> None:
    """Copy a fine-tuning run's initial weights into ``model``; one clear error if the model
    config describes other shapes than the checkpoint's."""
    try:
        model.load_state_dict(state["model"]["state_dict"])
    except RuntimeError as exc:
        theirs, ours = state["model"].get("config", {}), config_to_dict(model.cfg)
        differ = [f"model.{k}={ours[k]!r} (the checkpoint has {theirs[k]!r})" for k in ours if k in theirs and theirs[k] != ours[k]]
        detail = ", ".join(differ) or str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(f"trainer.init_from={path}: its weights do not fit the model config: {detail}") from None


def shared_tokenizer(cfg: TrainConfig, start: dict | None, utts: list[Utterance], dist: Distributed) -> Tokenizer:
    """The tokenizer of the checkpoint the run starts from, or one trained on ``utts`` by rank 0
    and shared."""
    if start is not None:
        return tokenizer_from_dict(start["tokenizer"])
    if not dist.is_main:
        return tokenizer_from_dict(from_main(None, dist))
    tokenizer = train_tokenizer(cfg.tokenizer, (u.text for u in utts))
    from_main(tokenizer.to_dict(), dist)
    return tokenizer


def shared_extractor(cfg: TrainConfig, start: dict | None, utts: list[Utterance], dist: Distributed) -> FeatureExtractor:
    """The feature extractor with the normalization statistics of the checkpoint the run starts
    from, or with statistics rank 0 computes on up to ``data.stats_utterances`` random
    utterances and shares."""
    extractor = FeatureExtractor(cfg.features)
    if start is not None:
        extractor.set_stats(start["features"]["mean"], start["features"]["std"])
        return extractor
    order = torch.randperm(len(utts), generator=torch.Generator().manual_seed(cfg.trainer.seed))
    subset = [utts[i] for i in order[: cfg.data.stats_utterances]]
    plain = SpeechDataset(subset, extractor)

    def features():
        for i in tqdm(range(len(plain)), desc="feature stats", leave=False, disable=None):
            try:
                yield extractor.log_mel(plain.waveform(i))
            except AudioError as exc:
                if not cfg.data.skip_bad:
                    raise
                log.warning("%s; left out of the feature statistics (data.skip_bad)", exc)

    # rank 0 reads the audio once and shares the statistics
    stats = from_main(feature_stats(features()) if dist.is_main else None, dist)
    extractor.set_stats(*stats)
    return extractor


def drop_infeasible(utts: list[Utterance], cfg: TrainConfig, tokenizer: Tokenizer,
                    model: AcousticModel) -> list[Utterance]:
    """Drop utterances too short for CTC to emit their transcript (at the fastest augmented speed).
    Trimmed edges (``augment.trim_prob``) are not counted: a trim that leaves too few frames costs
    that utterance's loss for the step (CTC's ``zero_infinity``), a cut-off word ending is the
    label noise the trim is for."""
    features = cfg.features
    speedup = cfg.augment.max_speedup()
    kept = []
    for utt in utts:
        frames = torch.tensor([features.num_frames(int(utt.duration / speedup * features.sample_rate))])
        ids = tokenizer.encode(utt.text)
        needed = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if int(model.output_lengths(frames)) >= needed:
            kept.append(utt)
    if len(kept) < len(utts):
        log.warning("dropped %d training utterances too short for their transcripts", len(utts) - len(kept))
    return kept
