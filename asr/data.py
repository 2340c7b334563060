"""Manifests, the training/evaluation dataset, the duration-bucketed sampler and collation.

Manifest line (NeMo-compatible JSON lines):
``{"audio_filepath": str, "duration": float, "text": str, "offset"?: float, "speaker"?: str}``;
relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from asr.audio import load_audio
from asr.audio_cache import AudioCache
from asr.atomic import atomic_write
from asr.errors import AudioError, ConfigError, ManifestError
from asr.augment import AugmentConfig, WaveformAugmenter, spec_augment
from asr.features import FeatureExtractor
from asr.speaker_norm import POOL_SECONDS, FrameSums, SpeakerNorm, pool_by_label, pool_by_nearest, pooled_stats
from asr.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    audio_filepath: Path
    duration: float
    text: str
    offset: float | None = None  # None: the whole file; a number: a segment of `duration` seconds
    speaker: str | None = None  # who speaks: utterances of one speaker can share normalization statistics

    def to_json(self, relative_to: Path | None = None) -> dict:
        path = self.audio_filepath
        if relative_to is not None:
            try:
                path = path.resolve().relative_to(relative_to)
            except ValueError:  # not below the manifest's folder: keep it absolute
                path = path.resolve()
        record = {"audio_filepath": str(path), "duration": round(self.duration, 4), "text": self.text}
        if self.offset is not None:
            record["offset"] = round(self.offset, 4)
        if self.speaker is not None:
            record["speaker"] = self.speaker
        return record


def read_manifest(path: str | Path, check_files: bool = True, problems: list[str] | None = None) -> list[Utterance]:
    """Parse a JSON-lines manifest; every problem is reported as ``file:line: what``.

    Args:
        check_files: also report lines whose audio file does not exist.
        problems: when given, a bad line is appended here (and logged) and skipped instead of
            raising (``data.skip_bad``); a missing, non-UTF-8 or empty manifest still raises.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    base = path.resolve().parent
    utterances = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            utterances.append(_parse_line(line, f"{path}:{number}", base, check_files))
        except ManifestError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            log.warning("%s; line skipped (data.skip_bad)", exc)
    if not utterances:
        raise ManifestError(f"{path}: manifest has no utterances")
    return utterances


def _parse_line(line: str, where: str, base: Path, check_files: bool) -> Utterance:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("audio_filepath", "duration", "text"):
        if key not in record:
            raise ManifestError(f"{where}: missing key '{key}'")
    audio, duration, text = record["audio_filepath"], record["duration"], record["text"]
    offset = record.get("offset")
    if not isinstance(audio, str) or not audio:
        raise ManifestError(f"{where}: 'audio_filepath' must be a non-empty string")
    if not isinstance(text, str):
        raise ManifestError(f"{where}: 'text' must be a string")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration <= 0:
        raise ManifestError(f"{where}: 'duration' must be a positive number, got {duration!r}")
    if offset is not None and (
        isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset) or offset < 0
    ):
        raise ManifestError(f"{where}: 'offset' must be a non-negative number, got {offset!r}")
    speaker = record.get("speaker")
    if speaker is not None and (not isinstance(speaker, str) or not speaker):
        raise ManifestError(f"{where}: 'speaker' must be a non-empty string, got {speaker!r}")
    audio_path = Path(audio)
    if not audio_path.is_absolute():
        audio_path = base / audio_path
    if check_files and not audio_path.is_file():
        raise ManifestError(f"{where}: audio file not found: {audio_path}")
    return Utterance(audio_path, float(duration), text, None if offset is None else float(offset), speaker)


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> Path:
    """Write a manifest atomically (temporary file, fsync, rename); paths relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    with atomic_write(path) as f:
        for utt in utterances:
            f.write(json.dumps(utt.to_json(base), ensure_ascii=False) + "\n")
    return path


class ItemKey(NamedTuple):
    """What the sampler yields per utterance: augmentation randomness derives from (seed, epoch,
    index) alone, so the draws do not depend on worker count or on where a run was resumed (the
    arithmetic can round differently in a worker, which computes with one thread)."""

    index: int
    epoch: int


@dataclass
class Example:
    features: torch.Tensor  # (T, F)
    targets: torch.Tensor  # (L,) int64
    index: int


@dataclass(frozen=True)
class Skipped:
    """An utterance whose audio could not be used; the main process decides whether that is an
    error or a warning (``data.skip_bad``), so the message stays one clean line."""

    index: int
    reason: str


@dataclass
class Batch:
    features: torch.Tensor  # (B, T, F) zero-padded; B may be 0 when every utterance was skipped
    lengths: torch.Tensor  # (B,) valid frames
    targets: torch.Tensor  # (sum L,) concatenated token ids
    target_lengths: torch.Tensor  # (B,)
    indices: list[int]
    skipped: list[Skipped] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        """Page-locked copies (the loader calls this for CUDA runs), so the copies to the GPU can
        be asynchronous (``non_blocking``) and overlap the previous step's kernels."""
        self.features = self.features.pin_memory()
        self.targets = self.targets.pin_memory()
        self.target_lengths = self.target_lengths.pin_memory()
        return self

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())


class SpeechDataset(Dataset):
    """Utterances -> (normalized features, token ids); augments only when ``augment`` is given."""

    def __init__(
        self,
        utterances: Sequence[Utterance],
        extractor: FeatureExtractor,
        tokenizer: Tokenizer | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        audio_cache_mb: float = 0.0,  # 0 for sets read once; training passes data.audio_cache_mb
    ):
        self.utterances = list(utterances)
        self.extractor = extractor
        self.seed = seed
        self.cache = AudioCache(self._read, audio_cache_mb) if audio_cache_mb > 0 else None
        self.norm_stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # (mean, std) replacing an utterance's own
        self.tokenizer = tokenizer
        self.use_augment(augment)
        self.targets = [
            torch.tensor(tokenizer.encode(u.text) if tokenizer else [], dtype=torch.long) for u in self.utterances
        ]

    def use_augment(self, augment: AugmentConfig | None) -> None:
        """Augment training items with ``augment`` from now on (None: the audio as it is)."""
        self.augment = augment
        # babble is mixed from the dataset's own other utterances
        self.augmenter = None if augment is None else WaveformAugmenter(
            augment, self.extractor.cfg.sample_rate, self.waveform, len(self.utterances))
        # the short utterances another may be joined with (augment.join_prob)
        self.join_partners = [] if augment is None or not augment.join_prob or self.tokenizer is None else [
            i for i, u in enumerate(self.utterances) if u.duration <= augment.join_partner_seconds]
        if self.join_partners:
            word = self.utterances[self.join_partners[0]].text
            if self.tokenizer.encode(f"{word} {word}") == self.tokenizer.encode(word + word):
                raise ConfigError("augment.join_prob: the tokenizer has no word separator (a corpus of single "
                                  "words?), so joined transcripts would run together; set augment.join_prob=0")

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, key: ItemKey | int) -> Example | Skipped:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            return self._example(index, epoch)
        except AudioError as exc:
            return Skipped(index, str(exc))

    def _example(self, index: int, epoch: int) -> Example:
        waveform = self.waveform(index)
        if self.augment is None:
            features = self.extractor.normalize(self.extractor.log_mel(waveform), self.norm_stats.get(index))
            return Example(features, self.targets[index], index)
        generator = torch.Generator().manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
        targets = self.targets[index]
        if self.join_partners and self.augmenter.draws_join(generator, epoch):
            waveform, targets = self._joined(index, waveform, generator)
        waveform, warp = self.augmenter(waveform, generator, epoch)
        features = spec_augment(self.extractor(waveform, warp), self.augment, generator)
        return Example(features, targets, index)

    def _joined(self, index: int, waveform: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The utterance joined by a pause with a short one (itself, now and then), and both transcripts; the
        utterance alone when the other's audio is unusable (reported where it is trained on)."""
        other = self.join_partners[int(torch.randint(len(self.join_partners), (1,), generator=generator))]
        try:
            partner = self.waveform(other)
        except AudioError:
            return waveform, self.targets[index]
        text = f"{self.utterances[index].text} {self.utterances[other].text}"
        return self.augmenter.join(waveform, partner, generator), torch.tensor(self.tokenizer.encode(text), dtype=torch.long)

    def use_speaker_stats(self, mode: SpeakerNorm = SpeakerNorm.labels, seconds: float = POOL_SECONDS) -> None:
        """Normalize each utterance with statistics pooled over its speaker's utterances, not over
        itself alone (:mod:`asr.speaker_norm`): those with its speaker label, or (``nearest``)
        those nearest to it in voice, ``seconds`` of audio in all. Utterances without a label
        (``labels``), and unreadable ones, keep their own statistics."""
        if not seconds >= 0:
            raise ConfigError(f"speaker normalization: a pool of {seconds} s of audio; it must be 0 or more")
        wanted = [i for i, u in enumerate(self.utterances) if mode is SpeakerNorm.nearest or u.speaker is not None]
        readable: list[int] = []

        def log_mels() -> Iterator[torch.Tensor]:
            for index, feats in self.readable_log_mels(wanted, "speaker statistics"):
                readable.append(index)
                yield feats

        sums = FrameSums.of(log_mels())
        self.norm_stats = {}
        if not readable:
            return
        if mode is SpeakerNorm.labels:
            pools = pool_by_label([self.utterances[i].speaker for i in readable], sums)
        else:
            pools = pool_by_nearest(sums, seconds * 1000 / self.extractor.cfg.hop_ms)
        stats = pooled_stats(sums, pools)
        self.norm_stats = {index: own for index, own in zip(readable, stats) if own is not None}

    def readable_log_mels(self, indices: Sequence[int], desc: str) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, un-normalized log-mels) of each of the utterances ``indices`` whose audio can be
        read, under a progress bar named ``desc``."""
        for index in tqdm(indices, desc=desc, leave=False, disable=None):
            try:
                feats = self.extractor.log_mel(self.waveform(index))
            except AudioError:
                continue  # reported when the utterance itself is read
            yield index, feats

    def waveform(self, index: int) -> torch.Tensor:
        """(T,) samples of utterance ``index`` at the extractor's rate (not to be changed in place)."""
        return self.cache(index) if self.cache is not None else self._read(index)

    def _read(self, index: int) -> torch.Tensor:
        utt = self.utterances[index]
        if utt.offset is None:  # a whole file, read to its end
            return load_audio(utt.audio_filepath, self.extractor.cfg.sample_rate)
        return load_audio(utt.audio_filepath, self.extractor.cfg.sample_rate, utt.offset, utt.duration)

    def num_frames(self) -> list[int]:
        """Nominal feature frames per utterance, from the manifest durations."""
        cfg = self.extractor.cfg
        return [cfg.num_frames(int(u.duration * cfg.sample_rate)) for u in self.utterances]


def collate(items: list[Example | Skipped]) -> Batch:
    examples = [e for e in items if isinstance(e, Example)]
    skipped = [e for e in items if isinstance(e, Skipped)]
    lengths = torch.tensor([e.features.shape[0] for e in examples], dtype=torch.long)
    dim = examples[0].features.shape[1] if examples else 0
    features = torch.zeros(len(examples), int(lengths.max()) if examples else 0, dim)
    for row, example in enumerate(examples):
        features[row, : example.features.shape[0]] = example.features
    return Batch(
        features=features,
        lengths=lengths,
        targets=torch.cat([e.targets for e in examples]) if examples else torch.zeros(0, dtype=torch.long),
        target_lengths=torch.tensor([len(e.targets) for e in examples], dtype=torch.long),
        indices=[e.index for e in examples],
        skipped=skipped,
    )


def skip_or_raise(reason: str, skip_bad: bool) -> str:
    """An unusable utterance: raise ``reason`` as an AudioError, or with ``skip_bad`` log it and
    return it (for the caller to count)."""
    if not skip_bad:
        raise AudioError(reason)
    log.warning("%s; utterance skipped", reason)
    return reason


def report_skipped(batch: Batch, skip_bad: bool, seen: set[int]) -> None:
    """:func:`skip_or_raise` for the unusable utterances of ``batch``, each logged once
    (``seen`` holds the indices reported so far: an epoch meets them again)."""
    for item in batch.skipped:
        if skip_bad and item.index in seen:
            continue
        seen.add(item.index)
        skip_or_raise(item.reason, skip_bad)


class BucketBatchSampler(Sampler[list[ItemKey]]):
    """Batches of similar-length utterances whose padded size stays under ``max_frames``.

    Utterances are sorted by length into ``num_buckets`` equal-count buckets. Each epoch the
    members of every bucket are ordered by their length scaled by a random factor in
    ``1 ± length_jitter`` (ties in random order), cut greedily into batches with
    ``longest * count <= max_frames``, and the batches of all buckets shuffled together. The
    jitter lets batch membership change from epoch to epoch (a model that meets the same batches
    every epoch trains worse) while neighbours still agree in length to within about that
    fraction, so padding stays low. Every utterance appears exactly once per epoch. The order
    depends only on (seed, epoch).
    """

    ORDER_VERSION = 2  # bumped whenever (seed, epoch) -> batches changes: checkpoints record it

    def __init__(
        self,
        num_frames: Sequence[int],
        max_frames: int,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        length_jitter: float = 0.2,
    ):
        self.num_frames = list(num_frames)
        self.length_jitter = length_jitter
        self.max_frames = max_frames
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        self.shard = None  # (rank, world_size, accumulate) once set_shard() is called
        too_long = [i for i, n in enumerate(self.num_frames) if n > max_frames]
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"{len(too_long)} utterance(s) exceed the batch frame cap of {max_frames} "
                f"(utterance {i} has {self.num_frames[i]} frames)"
            )
        order = sorted(range(len(self.num_frames)), key=self.num_frames.__getitem__)
        size = math.ceil(len(order) / max(1, num_buckets))
        self.buckets = [order[i : i + size] for i in range(0, len(order), size)]
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; ``start_batch`` skips batches already done (resuming)."""
        self.epoch, self.start_batch = epoch, start_batch

    def set_shard(self, rank: int, world_size: int, accumulate: int) -> None:
        """Yield only this rank's micro-batches: each optimizer step takes ``world_size *
        accumulate`` consecutive batches of the epoch's shared order (see :meth:`epoch_batches`)."""
        self.shard = (rank, world_size, accumulate)

    def epoch_batches(self) -> list[list[int]]:
        """The batches this sampler yields in the current epoch, before ``start_batch``: with a
        shard, rank r takes the r-th run of ``accumulate`` batches of each step's group of
        ``world_size * accumulate``; the tail that fills no whole step is dropped."""
        batches = self.batches(self.epoch)
        if self.shard is None:
            return batches
        rank, world, accumulate = self.shard
        group = world * accumulate
        steps = len(batches) // group
        return [batches[s * group + rank * accumulate + i] for s in range(steps) for i in range(accumulate)]

    def batches(self, epoch: int) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        batches: list[list[int]] = []
        for bucket in self.buckets:
            batches.extend(self._cut(self._ordered(bucket, generator) if self.shuffle else bucket))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        self._cache = (epoch, batches)
        return batches

    def _ordered(self, bucket: list[int], generator: torch.Generator) -> list[int]:
        """The bucket's members shuffled, then stably sorted by length x (1 ± length_jitter)."""
        members = [bucket[i] for i in torch.randperm(len(bucket), generator=generator)]
        scales = (1 + self.length_jitter * (2 * torch.rand(len(members), generator=generator, dtype=torch.float64) - 1)).tolist()
        keys = [self.num_frames[m] * scale for m, scale in zip(members, scales)]
        return [members[i] for i in sorted(range(len(members)), key=keys.__getitem__)]

    def _cut(self, members: list[int]) -> Iterator[list[int]]:
        batch: list[int] = []
        longest = 0
        for idx in members:
            n = self.num_frames[idx]
            if batch and max(longest, n) * (len(batch) + 1) > self.max_frames:
                yield batch
                batch, longest = [], 0
            batch.append(idx)
            longest = max(longest, n)
        if batch:
            yield batch

    def __iter__(self) -> Iterator[list[ItemKey]]:
        for batch in self.epoch_batches()[self.start_batch :]:
            yield [ItemKey(i, self.epoch) for i in batch]

    def __len__(self) -> int:
        return len(self.epoch_batches()) - self.start_batch
