"""The data a training run starts from: manifests read, the tokenizer and the feature
statistics (computed by rank 0 and shared with the other ranks, or taken from the checkpoint
being resumed), and the utterances CTC cannot learn from left out."""

from __future__ import annotations

import logging

import torch
from tqdm import tqdm

from asr.config import DataConfig, TrainConfig
from asr.data import SpeechDataset, Utterance, read_manifest
from asr.distributed import Distributed, from_main
from asr.errors import AudioError
from asr.features import FeatureExtractor, feature_stats
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


def shared_tokenizer(cfg: TrainConfig, resume: dict | None, utts: list[Utterance], dist: Distributed) -> Tokenizer:
    """The checkpoint's tokenizer, or one trained on ``utts`` by rank 0 and shared."""
    if resume is not None:
        return tokenizer_from_dict(resume["tokenizer"])
    if not dist.is_main:
        return tokenizer_from_dict(from_main(None, dist))
    tokenizer = train_tokenizer(cfg.tokenizer, (u.text for u in utts))
    from_main(tokenizer.to_dict(), dist)
    return tokenizer


def shared_extractor(cfg: TrainConfig, resume: dict | None, utts: list[Utterance], dist: Distributed) -> FeatureExtractor:
    """The feature extractor with the checkpoint's normalization statistics, or with statistics
    rank 0 computes on up to ``data.stats_utterances`` random utterances and shares."""
    extractor = FeatureExtractor(cfg.features)
    if resume is not None:
        extractor.set_stats(resume["features"]["mean"], resume["features"]["std"])
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
    """Drop utterances too short for CTC to emit their transcript (at the slowest speed)."""
    features = cfg.features
    slowest = max(cfg.augment.speed_factors or [1.0])
    kept = []
    for utt in utts:
        frames = torch.tensor([features.num_frames(int(utt.duration / slowest * features.sample_rate))])
        ids = tokenizer.encode(utt.text)
        needed = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if int(model.output_lengths(frames)) >= needed:
            kept.append(utt)
    if len(kept) < len(utts):
        log.warning("dropped %d training utterances too short for their transcripts", len(utts) - len(kept))
    return kept
