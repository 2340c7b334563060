"""What a training run starts from: manifests read, the tokenizer and the feature statistics
(computed by rank 0 and shared with the other ranks, or taken from the checkpoint being resumed
or fine-tuned), the initial weights of a fine-tuning run, and the utterances CTC cannot learn
from left out."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from asr.checkpoint import config_from_dict, config_to_dict, load_checkpoint
from asr.config import DataConfig, TrainConfig
from asr.data import SpeechDataset, Utterance, read_manifest
from asr.distributed import Distributed, from_main
from asr.errors import AudioError, CheckpointError, ConfigError
from asr.features import FeatureConfig, FeatureExtractor, feature_stats
from asr.model import AcousticModel
from asr.tokenizer import Tokenizer, tokenizer_from_dict, train_tokenizer

log = logging.getLogger(__name__)


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
    """Drop utterances too short for CTC to emit their transcript (at the fastest augmented speed)."""
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
