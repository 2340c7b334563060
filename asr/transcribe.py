"""Recognition drivers: a loaded model over waveforms, files and manifests.

Training validation, ``asr evaluate`` and ``asr transcribe`` all go through
:func:`recognize_dataset` / :class:`Recognizer`, so there is one inference path.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.audio import audio_info
from asr.checkpoint import build_components, load_checkpoint
from asr.data import BucketBatchSampler, SpeechDataset, Utterance, collate, read_manifest
from asr.decoding import Hypothesis, greedy_decode
from asr.features import FeatureExtractor
from asr.model import AcousticModel
from asr.scoring import ErrorRates
from asr.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_BATCH_FRAMES = 40_000  # padded 10 ms frames per inference batch


@dataclass(frozen=True)
class Transcript:
    key: str
    text: str
    duration: float
    score: float


def iter_hypotheses(
    model: AcousticModel,
    dataset: SpeechDataset,
    max_frames: int = DEFAULT_BATCH_FRAMES,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    progress: str | None = None,
) -> Iterator[tuple[int, Hypothesis]]:
    """Greedy hypotheses for every utterance of ``dataset`` as (index, hypothesis), batched by
    length under ``max_frames`` padded frames."""
    device = torch.device(device)
    sampler = BucketBatchSampler(dataset.num_frames(), max(max_frames, max(dataset.num_frames())), shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype != torch.float32 else nullcontext()
    try:
        with torch.inference_mode(), autocast:
            for batch in tqdm(loader, desc=progress, disable=True if progress is None else None, leave=False):
                log_probs, out_lengths = model(batch.features.to(device), batch.lengths)
                yield from zip(batch.indices, greedy_decode(log_probs, out_lengths))
    finally:
        model.train(was_training)


def recognize_dataset(
    model: AcousticModel,
    dataset: SpeechDataset,
    tokenizer: Tokenizer,
    max_frames: int = DEFAULT_BATCH_FRAMES,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype = torch.float32,
    progress: str | None = None,
) -> ErrorRates:
    """Decode ``dataset`` and score it against its (normalized) transcripts."""
    rates = ErrorRates()
    results = dict(
        (i, tokenizer.decode(h.tokens))
        for i, h in iter_hypotheses(model, dataset, max_frames, device, amp_dtype, progress=progress)
    )
    for i, utt in enumerate(dataset.utterances):
        rates.add(str(utt.audio_filepath), tokenizer.normalize(utt.text), results[i])
    return rates


class Recognizer:
    """A trained model ready to transcribe: acoustic model + feature extractor + tokenizer."""

    def __init__(self, model: AcousticModel, extractor: FeatureExtractor, tokenizer: Tokenizer, device: str = "auto"):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.extractor, self.tokenizer = extractor, tokenizer

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Recognizer:
        return cls(*build_components(load_checkpoint(path), path), device=device)

    @property
    def sample_rate(self) -> int:
        return self.extractor.cfg.sample_rate

    def transcribe_waveforms(self, waveforms: Sequence[torch.Tensor]) -> list[str]:
        """Transcribe (T,) waveforms at :attr:`sample_rate` as one padded batch."""
        feats = [self.extractor(w) for w in waveforms]
        lengths = torch.tensor([f.shape[0] for f in feats])
        batch = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device)
        with torch.inference_mode():
            log_probs, out_lengths = self.model(batch, lengths)
        return [self.tokenizer.decode(h.tokens) for h in greedy_decode(log_probs, out_lengths)]

    def transcribe_files(self, paths: Sequence[str | Path], max_frames: int = DEFAULT_BATCH_FRAMES) -> list[Transcript]:
        """Transcribe audio files (any format and rate) in length-sorted batches, input order kept."""
        utts = [Utterance(Path(p), audio_info(p)[1], "") for p in paths]
        return self._transcribe(utts, max_frames, "transcribe" if len(utts) > 1 else None)

    def evaluate(self, manifest: str | Path, max_frames: int = DEFAULT_BATCH_FRAMES) -> ErrorRates:
        """Score a manifest: WER/CER against its normalized transcripts."""
        dataset = SpeechDataset(read_manifest(manifest), self.extractor)
        return recognize_dataset(self.model, dataset, self.tokenizer, max_frames, self.device, progress="evaluate")

    def _transcribe(self, utts: list[Utterance], max_frames: int, progress: str | None) -> list[Transcript]:
        dataset = SpeechDataset(utts, self.extractor)
        results: dict[int, Hypothesis] = dict(iter_hypotheses(self.model, dataset, max_frames, self.device, progress=progress))
        return [
            Transcript(str(u.audio_filepath), self.tokenizer.decode(results[i].tokens), u.duration, results[i].score)
            for i, u in enumerate(utts)
        ]
