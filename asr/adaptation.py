"""Two-pass speaker adaptation, without transcripts.

A first pass transcribes a speaker's utterances. Then a scale and a shift per feature dimension
are fitted so that the frozen acoustic model gives those transcripts the highest CTC likelihood,
and the utterances are transcribed again with them. This is Kaldi's two-pass fMLLR decoding with a
diagonal transform: 2F numbers per speaker (160 for 80 mel bins), few enough that a minute of one-word clips fits them
without the model learning its own first-pass errors. Like Kaldi's confidence-weighted
adaptation, only the transcripts the model is surest of are fitted to (half of each speaker's, by
their CTC likelihood per token), since the doubtful ones are the likely errors. Each round
decodes, then fits again from where the last fit ended.

A scale ``s`` and shift ``b`` on normalized features ``x = (f - m) / σ`` are normalization with
the mean ``m - bσ/s`` and the standard deviation ``σ/s``, so a fit comes out as new normalization
statistics, applied as pooled speaker statistics are (:mod:`asr.speaker_norm`).

A stream (:class:`OnlineAdaptation`) has no second pass: after each final result, the transform is
fitted again to the surest half of the last 120 s of finished segments and their final
transcripts, and the segments that follow are heard through it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from asr.data import BucketBatchSampler, SpeechDataset
from asr.features import STD_FLOOR, utterance_stats
from asr.model import AcousticModel
from asr.tokenizer import BLANK_ID

log = logging.getLogger(__name__)

Stats = tuple[torch.Tensor, torch.Tensor]  # (mean, std), each (F,)
Transcribed = tuple[Sequence[int], float]  # a first pass's token ids and its confidence


@dataclass(frozen=True)
class AdaptOptions:
    """How each speaker's transform is fitted (docs/RESULTS.md measures the rounds)."""

    rounds: int = 3  # decode-then-fit passes before the final decode
    epochs: int = 5  # passes over the speaker's utterances per fit
    lr: float = 0.01  # Adam, on the log-scale and the shift
    batch_frames: int = 4000  # padded feature frames per step
    min_seconds: float = 5.0  # a speaker whose surest transcripts hold less audio is not fitted
    keep_fraction: float = 0.5  # of each speaker's transcripts, the surest this share are fitted to


@dataclass
class ScaleShift:
    """x -> x * exp(log_scale) + shift, per feature dimension; the scale stays positive."""

    log_scale: torch.Tensor  # (F,)
    shift: torch.Tensor  # (F,)

    @classmethod
    def identity(cls, dim: int) -> ScaleShift:
        return cls(torch.zeros(dim), torch.zeros(dim))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """(T, F) normalized features -> the same, transformed."""
        return features * self.log_scale.exp() + self.shift

    def apply_to(self, stats: Stats) -> Stats:
        """Normalization statistics whose output equals this transform of ``stats``' output."""
        mean, std = stats[0], stats[1].clamp_min(STD_FLOOR)
        scale = self.log_scale.exp()
        return mean - self.shift * std / scale, std / scale


def speaker_groups(speakers: Sequence[str | None], use_labels: bool = True) -> list[list[int]]:
    """Indices adapted together: those with one speaker label (unlabeled ones together), or
    without ``use_labels`` all of them as one voice and channel."""
    if not use_labels:
        return [list(range(len(speakers)))] if speakers else []
    groups: dict[str | None, list[int]] = {}
    for index, speaker in enumerate(speakers):
        groups.setdefault(speaker, []).append(index)
    return list(groups.values())


@torch.inference_mode(False)  # a caller inside inference_mode (a stream fed from it) still gets a fit
def fit_scale_shift(model: AcousticModel, features: Sequence[torch.Tensor], targets: Sequence[Sequence[int]],
                    start: ScaleShift, options: AdaptOptions = AdaptOptions(), seed: int = 0) -> ScaleShift:
    """The transform of normalized ``features`` (each (T, F)) under which ``model`` (frozen, in eval
    mode) gives ``targets`` (token ids, one list per utterance, none empty) the least CTC loss,
    fitted from ``start``. Deterministic for a given ``seed``."""
    device = next(model.parameters()).device
    log_scale = start.log_scale.clone().to(device).requires_grad_(True)
    shift = start.shift.clone().to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([log_scale, shift], lr=options.lr)
    lengths = [len(f) for f in features]
    # cut as the recognizer cuts its batches: length-sorted, at most batch_frames padded frames each
    sampler = BucketBatchSampler(lengths, max(options.batch_frames, max(lengths)), num_buckets=1, shuffle=False)
    batches = sampler.batches(0)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()  # no dropout: the transform must fit the model that decodes
    transform = ScaleShift(log_scale, shift)  # the fitted tensors themselves
    try:
        # cuDNN's recurrent kernels have no backward pass in eval mode; PyTorch's own CUDA kernels do
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            for _ in range(options.epochs):
                for b in torch.randperm(len(batches), generator=generator).tolist():
                    batch = batches[b]
                    # each utterance transformed before padding: padded frames stay zeros, as in decoding
                    # (cloned: features made under inference_mode cannot be saved for backward)
                    padded = torch.nn.utils.rnn.pad_sequence(
                        [transform(features[i].to(device).clone()) for i in batch], batch_first=True)
                    loss = _ctc_per_frame(model, padded, torch.tensor([len(features[i]) for i in batch]),
                                          [targets[i] for i in batch])
                    # the transform's gradients only: the model's parameters stay untouched
                    grads = torch.autograd.grad(loss, [log_scale, shift])
                    for param, grad in zip((log_scale, shift), grads):
                        param.grad = grad
                    optimizer.step()
    finally:
        model.train(was_training)
    return ScaleShift(log_scale.detach().cpu(), shift.detach().cpu())


def _ctc_per_frame(model: AcousticModel, features: torch.Tensor, lengths: torch.Tensor,
                   targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """CTC loss of ``targets`` under ``model`` for (B, T, F) ``features``, per input frame."""
    log_probs, out_lengths = model(features, lengths)
    flat = torch.tensor([token for target in targets for token in target])
    loss = F.ctc_loss(log_probs.transpose(0, 1), flat, out_lengths.cpu(), torch.tensor([len(t) for t in targets]),
                      reduction="sum", zero_infinity=True)
    return loss / lengths.sum()


def confidence(log_probs: torch.Tensor, tokens: Sequence[int]) -> float:
    """How sure the model is of a transcript (non-empty token ids): its CTC log-likelihood under
    (T', V) ``log_probs``, per token; minus infinity where the frames cannot hold it."""
    loss = F.ctc_loss(log_probs.float()[:, None], torch.tensor([list(tokens)]), torch.tensor([log_probs.shape[0]]),
                      torch.tensor([len(tokens)]), blank=BLANK_ID, reduction="sum", zero_infinity=False)
    value = -loss.item() / len(tokens)
    return value if not math.isnan(value) else -math.inf


def surest(transcribed: dict[int, Transcribed], candidates: Sequence[int], fraction: float) -> list[int]:
    """Those of ``candidates`` (indices) with a non-empty transcript, the ``fraction`` (at least
    one) of them with the highest confidence, in the order given."""
    with_words = [i for i in candidates if i in transcribed and transcribed[i][0]]
    ranked = sorted(with_words, key=lambda i: -transcribed[i][1])  # stable: ties keep the order given
    chosen = set(ranked[: max(1, round(fraction * len(ranked)))])  # round(): an exact half goes to the even count
    return [i for i in with_words if i in chosen]


def adapt_speakers(dataset: SpeechDataset, model: AcousticModel, transcribe: Callable[[], dict[int, Transcribed]],
                   options: AdaptOptions = AdaptOptions(), use_labels: bool = True) -> None:
    """``options.rounds`` times: ``transcribe`` (token ids and :func:`confidence` per utterance
    index, decoded with the dataset's statistics as they stand), fit each speaker's transform
    (:func:`speaker_groups`) to the surest of those transcripts, and set ``dataset.norm_stats``
    to the adapted statistics."""
    base: dict[int, Stats] = {}
    features: dict[int, torch.Tensor] = {}  # normalized as the first pass normalizes them
    for index, log_mel in dataset.readable_log_mels(range(len(dataset)), "adaptation features"):
        base[index] = dataset.norm_stats.get(index) or utterance_stats(log_mel)
        features[index] = dataset.extractor.normalize(log_mel, base[index])
    seconds_per_frame = dataset.extractor.cfg.hop_ms / 1000
    groups = speaker_groups([u.speaker for u in dataset.utterances], use_labels)
    fitted: dict[int, ScaleShift] = {}
    for round_ in range(options.rounds):
        transcribed = transcribe()
        for g, group in enumerate(tqdm(groups, desc=f"adapt, round {round_ + 1}", leave=False, disable=None)):
            members = surest(transcribed, [i for i in group if i in features], options.keep_fraction)
            if sum(len(features[i]) for i in members) * seconds_per_frame < options.min_seconds:
                continue
            start = fitted.get(g) or ScaleShift.identity(dataset.extractor.cfg.n_mels)
            fitted[g] = fit_scale_shift(model, [features[i] for i in members], [transcribed[i][0] for i in members],
                                        start, options, seed=round_)
            dataset.norm_stats.update({i: fitted[g].apply_to(base[i]) for i in group if i in base})
        log.info("speaker adaptation, round %d: %d of %d speakers fitted", round_ + 1, len(fitted), len(groups))


class OnlineAdaptation:
    """Speaker adaptation of a stream (one speaker throughout): :meth:`add` keeps finished
    segments' un-normalized features with their final transcripts (the most recent
    ``keep_seconds`` of segments whose finals have words) and fits :attr:`transform` again, from
    where it stood, to the surest of them. Results already given stay as they were; the segments
    that follow are normalized through the new transform."""

    def __init__(self, model: AcousticModel, dim: int, seconds_per_frame: float,
                 options: AdaptOptions = AdaptOptions(), keep_seconds: float = 120.0):
        self.model, self.options = model, options
        self.seconds_per_frame, self.keep_seconds = seconds_per_frame, keep_seconds
        self.transform = ScaleShift.identity(dim)
        self.kept: deque[tuple[torch.Tensor, Transcribed]] = deque()  # (T, F) log-mels, the final
        self.fits = 0

    def add(self, segments: Sequence[tuple[torch.Tensor, Transcribed]],
            normalize: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Keep finished ``segments``, each (T, F) log-mels with its final's token ids and
        :func:`confidence` as it was heard (one without words is not kept; confidences are not
        recomputed under later transforms), then refit to the surest of them once those hold
        ``options.min_seconds``. ``normalize`` gives a kept segment's features as the
        stream normalizes them now, before the transform."""
        self.kept.extend((log_mel, final) for log_mel, final in segments if final[0])
        while len(self.kept) > 1 and self._seconds(range(len(self.kept))) > self.keep_seconds:
            self.kept.popleft()
        members = surest({i: final for i, (_, final) in enumerate(self.kept)}, range(len(self.kept)),
                         self.options.keep_fraction)
        if self._seconds(members) < self.options.min_seconds:
            return
        features = [normalize(self.kept[i][0]) for i in members]
        self.transform = fit_scale_shift(self.model, features, [self.kept[i][1][0] for i in members], self.transform,
                                         self.options, seed=self.fits)
        self.fits += 1

    def _seconds(self, members: Iterable[int]) -> float:
        return sum(len(self.kept[i][0]) for i in members) * self.seconds_per_frame
