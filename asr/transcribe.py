"""Recognition drivers: a loaded model over waveforms, files and manifests.

Training validation, ``asr evaluate`` and ``asr transcribe`` all go through
:func:`recognize_dataset` / :class:`Recognizer`, so there is one inference path.
"""

from __future__ import annotations

import ctypes
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.alignment import WordTiming, word_timings
from asr.audio import audio_info
from asr.checkpoint import build_components, load_checkpoint
from asr.data import BucketBatchSampler, SpeechDataset, Utterance, collate, read_manifest, skip_or_raise
from asr.decoding import Decoder, DecodingOptions, Hypothesis, build_decoder, greedy_decode
from asr.errors import AudioError
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
    alternatives: tuple[tuple[str, float], ...] = ()  # n-best (text, score), best first, when asked for
    words: tuple[WordTiming, ...] = ()  # with timestamps=True
    error: str | None = None  # why this input could not be transcribed (then text is empty)


@dataclass(frozen=True)
class Recognition:
    index: int  # position in the dataset
    nbest: list[Hypothesis]  # best first
    log_probs: torch.Tensor | None  # (T', V) valid frames, when asked for (alignment, LM tuning)
    error: str | None = None  # the utterance's audio was unusable (nbest is then empty)


def iter_hypotheses(
    model: AcousticModel,
    dataset: SpeechDataset,
    max_frames: int = DEFAULT_BATCH_FRAMES,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    progress: str | None = None,
    decoder: Decoder | None = None,
    keep_log_probs: bool = False,
) -> Iterator[Recognition]:
    """A :class:`Recognition` for every utterance of ``dataset``, batched by length under
    ``max_frames`` padded frames; ``decoder`` defaults to greedy decoding."""
    decoder = decoder or (lambda log_probs, lengths: [[h] for h in greedy_decode(log_probs, lengths)])
    device = torch.device(device)
    # one bucket: without shuffling, cutting the length-sorted list greedily pads least, and
    # small inputs still fill whole batches (ten buckets of 13 windows would batch them in pairs)
    sampler = BucketBatchSampler(dataset.num_frames(), max(max_frames, max(dataset.num_frames())), num_buckets=1,
                                 shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    was_training = model.training
    if was_training:  # (walking the modules costs more than a short file's features)
        model.eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype != torch.float32 else nullcontext()
    try:
        with torch.inference_mode(), autocast:
            for batch in tqdm(loader, desc=progress, disable=True if progress is None else None, leave=False):
                for item in batch.skipped:
                    yield Recognition(item.index, [], None, error=item.reason)
                if not batch.indices:
                    continue
                log_probs, out_lengths = model(batch.features.to(device), batch.lengths)
                log_probs = log_probs.float()
                # kept log-probs: one copy per batch, not per row (nor a read-back when none are kept)
                kept = [lp[:n] for lp, n in zip(log_probs.cpu(), out_lengths.tolist())] if keep_log_probs else None
                for row, (index, nbest) in enumerate(zip(batch.indices, decoder(log_probs, out_lengths))):
                    yield Recognition(index, nbest, kept[row] if kept is not None else None)
    finally:
        if was_training:
            model.train()


def recognize_dataset(
    model: AcousticModel,
    dataset: SpeechDataset,
    tokenizer: Tokenizer,
    max_frames: int = DEFAULT_BATCH_FRAMES,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype = torch.float32,
    progress: str | None = None,
    decoder: Decoder | None = None,
    skip_bad: bool = False,
) -> ErrorRates:
    """Decode ``dataset`` (greedy unless ``decoder`` is given) and score it against its
    (normalized) transcripts; unusable audio raises AudioError, or with ``skip_bad`` is
    counted in ``skipped`` and left out of the rates."""
    rates = ErrorRates()
    hypotheses = iter_hypotheses(model, dataset, max_frames, device, amp_dtype, progress=progress, decoder=decoder)
    results = {}
    for r in hypotheses:
        if r.error is not None:
            rates.skip(str(dataset.utterances[r.index].audio_filepath), skip_or_raise(r.error, skip_bad))
        else:
            results[r.index] = tokenizer.decode(r.nbest[0].tokens).strip()
    for i, utt in enumerate(dataset.utterances):
        if i in results:
            rates.add(str(utt.audio_filepath), tokenizer.normalize(utt.text), results[i])
    return rates


class Recognizer:
    """A trained model ready to transcribe: acoustic model + feature extractor + tokenizer."""

    def __init__(
        self,
        model: AcousticModel,
        extractor: FeatureExtractor,
        tokenizer: Tokenizer,
        device: str = "auto",
        options: DecodingOptions = DecodingOptions(),
    ):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.extractor, self.tokenizer, self.options = extractor, tokenizer, options
        self.decoder = build_decoder(tokenizer, options, device=self.device)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", options: DecodingOptions = DecodingOptions()) -> Recognizer:
        return cls(*build_components(load_checkpoint(path), path), device=device, options=options)

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
        return [self.tokenizer.decode(nbest[0].tokens).strip() for nbest in self.decoder(log_probs, out_lengths)]

    @property
    def seconds_per_frame(self) -> float:
        """Duration of one model output frame: feature hop times the subsampling factor."""
        return self.extractor.cfg.hop_ms / 1000 * self.model.cfg.subsampling_factor

    def transcribe_files(
        self, paths: Sequence[str | Path], max_frames: int = DEFAULT_BATCH_FRAMES, timestamps: bool = False
    ) -> list[Transcript]:
        """Transcribe audio files (any format and rate) in length-sorted batches, input order kept.
        With ``timestamps``, each transcript carries its words' times and confidences."""
        utts = [Utterance(Path(p), audio_info(p)[1], "") for p in paths]
        return self.transcribe_utterances(utts, max_frames, timestamps)

    def transcribe_utterances(
        self, utts: Sequence[Utterance], max_frames: int = DEFAULT_BATCH_FRAMES, timestamps: bool = False,
        speech_edges: bool = True,
    ) -> list[Transcript]:
        """Like :meth:`transcribe_files` for manifest entries (segments of files via ``offset``);
        word times count from the start of the file. ``speech_edges`` moves word edges from the
        CTC spans to the speech around them (:func:`asr.alignment.refine_edges`).

        Raises:
            AudioError: for the first input whose audio is unusable (:meth:`iter_utterances`
                reports such inputs and goes on instead).
        """
        done = dict(self.iter_utterances(utts, max_frames, timestamps, speech_edges))
        failed = next((t.error for t in done.values() if t.error is not None), None)
        if failed is not None:
            raise AudioError(failed)
        return [done[i] for i in range(len(utts))]

    def iter_utterances(
        self, utts: Sequence[Utterance], max_frames: int = DEFAULT_BATCH_FRAMES, timestamps: bool = False,
        speech_edges: bool = True,
    ) -> Iterator[tuple[int, Transcript]]:
        """(index, transcript) of each utterance as its batch finishes (length order, not input
        order); an unusable input gives a transcript whose ``error`` says why."""
        if not utts:  # e.g. every input of transcribe_all was long
            return
        dataset = SpeechDataset(list(utts), self.extractor)
        progress = "transcribe" if len(utts) > 1 else None
        recognitions = iter_hypotheses(
            self.model, dataset, max_frames, self.device, progress=progress, decoder=self.decoder,
            keep_log_probs=timestamps,
        )
        for r in recognitions:
            utt = utts[r.index]
            if r.error is not None:
                yield r.index, Transcript(str(utt.audio_filepath), "", utt.duration, 0.0, error=r.error)
                continue
            nbest = [(self.tokenizer.decode(h.tokens).strip(), h.score) for h in r.nbest]
            words: tuple[WordTiming, ...] = ()
            if timestamps:
                offset = utt.offset or 0.0
                waveform = dataset.waveform(r.index) if speech_edges else None
                words = tuple(word_timings(r.log_probs, r.nbest[0].tokens, self.tokenizer, self.seconds_per_frame,
                                           offset, end=offset + utt.duration, waveform=waveform,
                                           sample_rate=self.sample_rate))
            alternatives = tuple(nbest) if len(nbest) > 1 else ()
            yield r.index, Transcript(str(utt.audio_filepath), nbest[0][0], utt.duration, nbest[0][1], alternatives, words)

    def evaluate(self, manifest: str | Path, skip_bad: bool = False) -> ErrorRates:
        """Score a manifest: WER/CER against its normalized transcripts. Utterances longer than
        LONG_AUDIO_SECONDS are decoded in windows like ``asr transcribe`` does (bounded memory).
        A bad manifest line or unusable audio raises, or with ``skip_bad`` is warned about,
        counted in ``skipped`` and left out of the rates."""
        problems: list[str] | None = [] if skip_bad else None
        utts = read_manifest(manifest, problems=problems)
        rates = ErrorRates()
        for line in problems or []:
            rates.skip(str(manifest), line)
        for utt, transcript in zip(utts, transcribe_all(self, utts)):
            if transcript.error is not None:
                rates.skip(transcript.key, skip_or_raise(transcript.error, skip_bad))
            else:
                rates.add(transcript.key, self.tokenizer.normalize(utt.text), transcript.text)
        return rates


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".nist", ".aif", ".aiff", ".au", ".caf", ".w64"}


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """Audio files, folders (searched recursively for audio by suffix) and JSON-lines manifests
    (their entries, ``offset``/``duration`` segments included) as one list of utterances, and
    the (path, reason) of each file whose header could not be read (left out, not raised)."""
    utts: list[Utterance] = []
    failed: list[tuple[str, str]] = []

    def add(path: Path) -> None:
        try:
            utts.append(Utterance(path, audio_info(path)[1], ""))
        except AudioError as exc:
            failed.append((str(path), str(exc)))

    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not files:
                log.warning("%s: no audio files found in this folder", item)
            for path in files:
                add(path)
        elif item.suffix in (".jsonl", ".json"):
            utts.extend(read_manifest(item))
        else:
            add(item)
    return utts, failed


LONG_AUDIO_SECONDS = 40.0  # longer files are transcribed in overlapping windows


def windows(duration: float, window: float, overlap: float) -> list[tuple[float, float, float, float]]:
    """Cover [0, duration] with windows of ``window`` seconds overlapping by ``overlap``.

    Returns (start, length, keep_from, keep_to) per window: a word belongs to the window whose
    keep range [keep_from, keep_to) holds its start; keep ranges tile the audio exactly, and
    each border sits in the middle of an overlap, where both windows have context."""
    if overlap < 0 or window <= 2 * overlap:
        raise ValueError(f"window ({window}s) must be longer than twice the overlap ({overlap}s)")
    step = window - overlap
    starts = [0.0]
    while starts[-1] + window < duration:
        starts.append(starts[-1] + step)
    result = []
    for i, start in enumerate(starts):
        keep_from = 0.0 if i == 0 else start + overlap / 2
        keep_to = duration + 1.0 if i == len(starts) - 1 else start + step + overlap / 2
        result.append((start, min(window, duration - start), keep_from, keep_to))
    return result


def stitch(pieces: Sequence[tuple[Transcript, float, float]], key: str, duration: float) -> Transcript:
    # the score of a stitched transcript is the sum of its windows' scores (overlaps counted twice)
    """Join window transcripts (each with its keep range) into one: a word belongs to the window
    whose keep range holds its start. (Starts, the first token's onset, are what CTC places well;
    ends stretch over the frames a peaky model leaves to its last token.)"""
    words = [
        w for t, keep_from, keep_to in pieces for w in t.words if keep_from <= w.start < keep_to
    ]
    return Transcript(key, " ".join(w.word for w in words), duration, sum(t.score for t, _, _ in pieces), (), tuple(words))


def transcribe_long(
    recognizer: Recognizer, utt: Utterance, window: float = 30.0, overlap: float = 4.0,
    max_frames: int = DEFAULT_BATCH_FRAMES,
) -> Transcript:
    """Transcribe a long file (or manifest segment) in bounded memory: overlapping windows read
    straight from the file (never the whole waveform), decoded in batches, stitched with word
    times counted from the start of the file."""
    base = utt.offset or 0.0
    plan = windows(utt.duration, window, overlap)
    parts = [Utterance(utt.audio_filepath, length, "", offset=base + start) for start, length, _, _ in plan]
    frames_per_window = window * 1000 / recognizer.extractor.cfg.hop_ms
    per_group = max(1, int(max_frames // frames_per_window))  # windows per inference batch
    pieces: list[Transcript] = []
    release_free_memory()
    with tqdm(total=len(parts), desc="windows", leave=False) as progress:
        for first in range(0, len(parts), per_group):
            group = parts[first : first + per_group]
            pieces += recognizer.transcribe_utterances(group, max_frames, timestamps=True)
            release_free_memory()
            progress.update(len(group))
    keeps = [(t, base + keep_from, base + keep_to) for t, (_, _, keep_from, keep_to) in zip(pieces, plan)]
    return stitch(keeps, str(utt.audio_filepath), utt.duration)


def release_free_memory() -> None:
    """Keep a long run's resident memory at its live size (glibc only; elsewhere a no-op).

    Batch after batch of large tensors, glibc's allocator raises its mmap threshold to the
    largest block freed so far and then serves such blocks from the heap, where freed memory
    mostly stays resident: a long file's peak RSS crept up with its length (615 -> 757 MiB from 5
    to 60 minutes). Blocks of 4 MiB and more get their own mapping again (returned to the OS
    when freed), and the heap's free pages are handed back."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.malloc_trim(0)


_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


@lru_cache(maxsize=1)
def _glibc():
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def transcribe_all(
    recognizer: Recognizer, utts: Sequence[Utterance], timestamps: bool = False,
    long_audio: float = LONG_AUDIO_SECONDS, window: float = 30.0, overlap: float = 4.0,
) -> list[Transcript]:
    """Transcribe any mix of short and long inputs in input order (see :func:`iter_transcripts`)."""
    results = dict(iter_transcripts(recognizer, utts, timestamps, long_audio, window, overlap))
    return [results[i] for i in range(len(utts))]


def iter_transcripts(
    recognizer: Recognizer, utts: Sequence[Utterance], timestamps: bool = False,
    long_audio: float = LONG_AUDIO_SECONDS, window: float = 30.0, overlap: float = 4.0,
) -> Iterator[tuple[int, Transcript]]:
    """(index, transcript) as each input finishes: short ones batched together, each one longer
    than ``long_audio`` seconds in overlapping windows (:func:`transcribe_long`). An unusable
    input yields a transcript with ``error`` set; the others go on."""
    short = [i for i, u in enumerate(utts) if u.duration <= long_audio]
    for position, transcript in recognizer.iter_utterances([utts[i] for i in short], timestamps=timestamps):
        yield short[position], transcript
    for i, utt in enumerate(utts):
        if utt.duration > long_audio:
            log.info("%s: %.0f s, transcribed in %.0f s windows", utt.audio_filepath, utt.duration, window)
            try:
                yield i, transcribe_long(recognizer, utt, window, overlap)
            except AudioError as exc:
                yield i, Transcript(str(utt.audio_filepath), "", utt.duration, 0.0, error=str(exc))
