"""Recognition: a trained model over utterances, and scoring against their transcripts.

:class:`Recognizer` is the one inference path. ``asr transcribe`` (:meth:`Recognizer.recognize`),
``asr evaluate`` and validation during training (:meth:`Recognizer.evaluate`) and LM tuning
(:mod:`asr.tuning`, on the kept log-probabilities) all go through it: short utterances in
length-sorted batches, long ones in overlapping windows (:mod:`asr.long_audio`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, overload

import numpy as np

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.adaptation import AdaptOptions, Transcribed, adapt_speakers, confidence
from asr.alignment import word_timings
from asr.audio import audio_files, audio_info, resample
from asr.checkpoint import build_components, load_checkpoint
from asr.data import BucketBatchSampler, SpeechDataset, Utterance, collate, read_manifest, skip_or_raise
from asr.decoding import DecodingOptions, build_decoder
from asr.devices import resolve_device
from asr.errors import AudioError, ConfigError
from asr.features import FeatureExtractor
from asr.long_audio import LONG_AUDIO_SECONDS, OVERLAP_SECONDS, WINDOW_SECONDS, release_free_memory, stitch, windows
from asr.model import AcousticModel
from asr.onnx_model import is_onnx
from asr.scoring import ErrorRates, score
from asr.speaker_norm import POOL_SECONDS, SpeakerNorm
from asr.tokenizer import Tokenizer
from asr.transcript import Transcript, WordTiming

if TYPE_CHECKING:
    from asr.stream import StreamEvent, StreamingRecognizer

log = logging.getLogger(__name__)

DEFAULT_BATCH_FRAMES = 40_000  # padded 10 ms frames per inference batch


class Recognizer:
    """A trained model ready to transcribe: acoustic model + feature extractor + tokenizer + decoder."""

    def __init__(self, model: AcousticModel, extractor: FeatureExtractor, tokenizer: Tokenizer, device: str = "auto",
                 options: DecodingOptions = DecodingOptions(), amp_dtype: torch.dtype = torch.float32,
                 max_frames: int = DEFAULT_BATCH_FRAMES):
        self.device = resolve_device(str(device), field="device")
        self.model = model.to(self.device)
        self.extractor, self.tokenizer, self.options = extractor, tokenizer, options
        self.amp_dtype, self.max_frames = amp_dtype, max_frames  # padded frames per batch
        self.decoder = build_decoder(tokenizer, options, device=self.device)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", options: DecodingOptions = DecodingOptions()) -> Recognizer:
        """A checkpoint (``model.pt``), or an exported model (``.onnx``, run by onnxruntime on the CPU)."""
        if is_onnx(path):
            from asr.onnx_backend import onnx_components

            return cls(*onnx_components(path, device), device="cpu", options=options)
        return cls(*build_components(load_checkpoint(path), path), device=device, options=options)

    def with_hotwords(self, hotwords: dict[str, float]) -> Recognizer:
        """This recognizer (the same model) with a beam search that favours ``hotwords``
        ({word: boost}, :mod:`asr.hotwords`); needs beam search with a word LM."""
        from asr.decoding import BeamSearchDecoder

        other = copy.copy(self)
        other.decoder = BeamSearchDecoder(self.tokenizer, self.options, hotwords=hotwords)
        return other

    @property
    def sample_rate(self) -> int:
        return self.extractor.cfg.sample_rate

    @property
    def seconds_per_frame(self) -> float:
        """Duration of one model output frame: feature hop times the subsampling factor."""
        return self.extractor.cfg.hop_ms / 1000 * self.model.cfg.subsampling_factor

    @overload
    def transcribe(self, audio: str | Path | Utterance | np.ndarray | torch.Tensor, sample_rate: int | None = None,
                   timestamps: bool = True, speech_edges: bool = True) -> Transcript: ...

    @overload
    def transcribe(self, audio: list[str | Path | Utterance], sample_rate: None = None, timestamps: bool = True,
                   speech_edges: bool = True) -> list[Transcript]: ...

    def transcribe(self, audio, sample_rate=None, timestamps=True, speech_edges=True):
        """Transcribe one input, or a list of them (in length-sorted batches, input order kept).

        Args:
            audio: an audio file (any format and rate), a manifest entry, or (T,) samples at
                ``sample_rate`` (mono; (T, C) channels are averaged); or a list of files or entries.
            timestamps: each transcript's words with start, end and confidence.
            speech_edges: word edges moved from the CTC spans to the speech around them.

        Raises:
            AudioError: for an input whose audio is unusable (the first one, for a list;
                :meth:`recognize` reports such inputs and goes on instead).
        """
        if isinstance(audio, (np.ndarray, torch.Tensor)):
            return self._transcribe_samples(audio, sample_rate, timestamps, speech_edges)
        if not isinstance(audio, list):
            return self.transcribe([audio], timestamps=timestamps, speech_edges=speech_edges)[0]
        utts = [u if isinstance(u, Utterance) else Utterance(Path(u), audio_info(u)[1], "") for u in audio]
        return raise_unusable(self.recognize_all(utts, timestamps=timestamps, speech_edges=speech_edges))

    def recognize_all(self, utts: Sequence[Utterance], **options) -> list[Transcript]:
        """:meth:`recognize` (with its ``options``) collected in input order."""
        done = dict(self.recognize(utts, **options))
        return [done[i] for i in range(len(utts))]

    def recognize(self, utts: Sequence[Utterance], timestamps: bool = False, keep_log_probs: bool = False,
                  speech_edges: bool = True, long_audio: float = LONG_AUDIO_SECONDS, window: float = WINDOW_SECONDS,
                  overlap: float = OVERLAP_SECONDS, speaker_norm: bool | str = False,
                  pool_seconds: float = POOL_SECONDS, adapt: int = 0) -> Iterator[tuple[int, Transcript]]:
        """(index, transcript) of each utterance as it finishes: those up to ``long_audio`` seconds
        batched together, each longer one in ``window``-second windows overlapping by ``overlap``
        seconds. An unusable input yields a transcript whose ``error`` says why; the others go on.

        Args:
            timestamps: word times (from the start of the file) and confidences.
            keep_log_probs: each transcript of a short utterance keeps its (T', V) log-probabilities.
            speech_edges: word edges moved from the CTC spans to the speech around them
                (:func:`asr.alignment.refine_edges`).
            speaker_norm: normalize each utterance with statistics pooled over its speaker's
                (:mod:`asr.speaker_norm`): True or "labels", those with its ``Utterance.speaker``;
                "nearest", those nearest to it in voice, no labels needed, ``pool_seconds`` of
                audio in all. Needs a model with per-utterance normalization. Long inputs keep
                their own.
            adapt: rounds of two-pass speaker adaptation (:mod:`asr.adaptation`; 0: none): each
                speaker's features fitted to a first pass's transcripts, then decoded again.
                Speakers are the utterances' labels (unlabeled ones as one), or with
                ``speaker_norm="nearest"``, which uses no labels, all of them as one.
        """
        speaker_norm = SpeakerNorm.parse(speaker_norm)
        if adapt < 0:
            raise ConfigError(f"speaker adaptation: {adapt} rounds; it must be 0 (none) or more")
        if speaker_norm:
            self.extractor.check_speaker_norm()
        short = [i for i, u in enumerate(utts) if u.duration <= long_audio]
        dataset = SpeechDataset([utts[i] for i in short], self.extractor)
        if speaker_norm:
            dataset.use_speaker_stats(speaker_norm, pool_seconds)
        if adapt > 0 and short:
            self._adapt(dataset, adapt, use_labels=speaker_norm is not SpeakerNorm.nearest, progress=len(utts) > 1)
        batches = self._batches(dataset, timestamps or keep_log_probs, progress=len(utts) > 1)
        for position, transcript in self._transcripts(batches, [utts[i] for i in short], timestamps, speech_edges):
            if not keep_log_probs:
                transcript = dataclasses.replace(transcript, log_probs=None)
            yield short[position], transcript
        for i, utt in enumerate(utts):
            if utt.duration > long_audio:
                log.info("%s: %.0f s, transcribed in %.0f s windows", utt.audio_filepath, utt.duration, window)
                try:
                    yield i, self._recognize_long(utt, window, overlap)
                except AudioError as exc:
                    yield i, Transcript(str(utt.audio_filepath), "", utt.duration, 0.0, error=str(exc))

    def evaluate(self, manifest: str | Path | Sequence[Utterance], skip_bad: bool = False,
                 speaker_norm: bool | str = False, pool_seconds: float = POOL_SECONDS, adapt: int = 0) -> ErrorRates:
        """WER/CER of a manifest (or utterances) against its normalized transcripts. A bad manifest
        line or unusable audio raises, or with ``skip_bad`` is warned about, counted in
        ``skipped`` and left out of the rates. ``speaker_norm``, ``pool_seconds``, ``adapt``: as in
        :meth:`recognize`; the transcripts are never used to recognize."""
        problems: list[str] | None = [] if skip_bad else None
        utts = read_manifest(manifest, problems=problems) if isinstance(manifest, (str, Path)) else list(manifest)
        transcripts = self.recognize_all(utts, speaker_norm=speaker_norm, pool_seconds=pool_seconds, adapt=adapt)
        rates = self.score(utts, transcripts, skip_bad)
        for line in problems or []:
            rates.skip(str(manifest), line)
        return rates

    def score(self, utts: Sequence[Utterance], transcripts: Sequence[Transcript], skip_bad: bool = False) -> ErrorRates:
        """Score ``transcripts`` against the utterances' texts, normalized as the tokenizer does."""
        kept = [(u, t) for u, t in zip(utts, transcripts, strict=True) if t.error is None]
        rates = score([self.tokenizer.normalize(u.text) for u, _ in kept], [t.text for _, t in kept],
                      [t.key for _, t in kept], [u.speaker for u, _ in kept])
        for t in transcripts:
            if t.error is not None:
                rates.skip(t.key, skip_or_raise(t.error, skip_bad))
        return rates

    def check_adaptable(self) -> None:
        """Speaker adaptation (:mod:`asr.adaptation`) fits features to this model: a ConfigError
        unless it is a PyTorch checkpoint trained with per-utterance normalization."""
        if not isinstance(self.model, AcousticModel):
            raise ConfigError("speaker adaptation needs a PyTorch checkpoint (model.pt): an ONNX export cannot be "
                              "fitted to")
        self.extractor.check_speaker_norm("speaker adaptation")

    def _adapt(self, dataset: SpeechDataset, rounds: int, use_labels: bool, progress: bool) -> None:
        """Speaker adaptation of ``dataset``'s normalization statistics (:mod:`asr.adaptation`)."""
        self.check_adaptable()

        def first_pass() -> dict[int, Transcribed]:
            return {index: (nbest[0].tokens, confidence(log_probs, nbest[0].tokens) if nbest[0].tokens else 0.0)
                    for index, nbest, log_probs, error in self._batches(dataset, True, progress)
                    if error is None and nbest}

        adapt_speakers(dataset, self.model, first_pass, AdaptOptions(rounds=rounds), use_labels)

    def _batches(self, dataset: SpeechDataset, keep_log_probs: bool, progress: bool) -> Iterator[tuple]:
        """(index, n-best, log-probs or None, error or None) per utterance of ``dataset``, decoded
        in batches of at most ``max_frames`` padded frames."""
        if not len(dataset):
            return
        # one bucket: without shuffling, cutting the length-sorted list greedily pads least, and
        # small inputs still fill whole batches
        sampler = BucketBatchSampler(dataset.num_frames(), max(self.max_frames, max(dataset.num_frames())),
                                     num_buckets=1, shuffle=False)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
        was_training = self.model.training
        if was_training:  # validation during training (walking the modules costs more than a short file's features)
            self.model.eval()
        dtype = self.amp_dtype
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        try:
            with torch.inference_mode(), autocast:
                for batch in tqdm(loader, desc="recognize", disable=None if progress else True, leave=False):
                    for item in batch.skipped:
                        yield item.index, [], None, item.reason
                    if not batch.indices:
                        continue
                    log_probs, out_lengths = self.model(batch.features.to(self.device), batch.lengths)
                    log_probs = log_probs.float()
                    # kept log-probs: one copy per batch, not per row (nor a read-back when none are kept)
                    kept = [lp[:n] for lp, n in zip(log_probs.cpu(), out_lengths.tolist())] if keep_log_probs else None
                    for row, (index, nbest) in enumerate(zip(batch.indices, self.decoder(log_probs, out_lengths))):
                        yield index, nbest, kept[row] if kept is not None else None, None
        finally:
            if was_training:
                self.model.train()

    def stream(self, blocks: Iterable[np.ndarray], sample_rate: int | None = None, **options) -> Iterator[StreamEvent]:
        """Live transcription: blocks of (n,) samples at ``sample_rate`` (default: the model's) in,
        the partial and final :class:`asr.stream.StreamEvent` s of ``asr stream --json`` out; the
        last final comes when ``blocks`` ends. ``options``: the fields of
        :class:`asr.stream.StreamOptions` (``chunk_ms``, ``endpoint_silence_ms``, ...)."""
        from asr.sources import resample_blocks

        streamer = self.streamer(**options)
        for block in resample_blocks(blocks, sample_rate or self.sample_rate, self.sample_rate):
            yield from streamer.accept(block)
        yield from streamer.finish()

    def streamer(self, **options) -> StreamingRecognizer:
        """A :class:`asr.stream.StreamingRecognizer` of this model (blocks at the model's rate in
        with ``accept``, ``finish`` at the end); a chunk-aware model streams with the chunk and
        right context it was trained with unless ``options`` say otherwise."""
        from asr.stream import StreamingRecognizer, model_stream_options

        if not isinstance(self.model, AcousticModel):  # an exported model has no chunk-by-chunk state
            from asr.onnx_backend import OnnxStreamingRecognizer as StreamingRecognizer
        return StreamingRecognizer(self, model_stream_options(self, **options))

    def _transcribe_samples(self, samples: np.ndarray | torch.Tensor, sample_rate: int | None, timestamps: bool,
                            speech_edges: bool) -> Transcript:
        """One in-memory waveform, whole (no windows: it is in memory already)."""
        waveform = samples_to_waveform(samples, sample_rate, self.sample_rate)
        features = self.extractor(waveform)
        with torch.inference_mode():
            log_probs, lengths = self.model(features.unsqueeze(0).to(self.device), torch.tensor([features.shape[0]]))
            log_probs = log_probs.float()
            nbest = self.decoder(log_probs, lengths)[0]
        utt = Utterance(Path("<samples>"), waveform.numel() / self.sample_rate, "")
        decoded = iter([(0, nbest, log_probs[0, : int(lengths[0])].cpu(), None)])
        transcripts = self._transcripts(decoded, [utt], timestamps, speech_edges, waveform=lambda _: waveform)
        return dataclasses.replace(next(transcripts)[1], log_probs=None)

    def _transcripts(self, batches: Iterator[tuple], utts: Sequence[Utterance], timestamps: bool,
                     speech_edges: bool, waveform: Callable[[int], torch.Tensor] | None = None,
                     ) -> Iterator[tuple[int, Transcript]]:
        """Decoded batches as transcripts, with word times when asked for (``waveform``: the
        samples of utterance i, for the speech edges; default: read from its file)."""
        for index, nbest, log_probs, error in batches:
            utt = utts[index]
            if error is not None:
                yield index, Transcript(str(utt.audio_filepath), "", utt.duration, 0.0, error=error)
                continue
            texts = [(self.tokenizer.decode(h.tokens).strip(), h.score) for h in nbest]
            words: tuple[WordTiming, ...] = ()
            if timestamps:
                offset = utt.offset or 0.0
                samples = None
                if speech_edges:
                    samples = waveform(index) if waveform else SpeechDataset([utt], self.extractor).waveform(0)
                words = tuple(word_timings(log_probs, nbest[0].tokens, self.tokenizer, self.seconds_per_frame, offset,
                                           end=offset + utt.duration, waveform=samples, sample_rate=self.sample_rate))
            alternatives = tuple(texts) if len(texts) > 1 else ()
            yield index, Transcript(str(utt.audio_filepath), texts[0][0], utt.duration, texts[0][1], alternatives, words,
                                    log_probs=log_probs)

    def _recognize_long(self, utt: Utterance, window: float, overlap: float) -> Transcript:
        """A long file (or manifest segment) in bounded memory: overlapping windows read straight
        from the file (never the whole waveform), decoded in batches, stitched with word times
        counted from the start of the file."""
        base = utt.offset or 0.0
        plan = windows(utt.duration, window, overlap)
        parts = [Utterance(utt.audio_filepath, length, "", offset=base + start) for start, length, _, _ in plan]
        per_group = max(1, int(self.max_frames // (window * 1000 / self.extractor.cfg.hop_ms)))  # windows per batch
        pieces: list[Transcript] = []
        release_free_memory()
        with tqdm(total=len(parts), desc="windows", leave=False) as progress:
            for first in range(0, len(parts), per_group):
                group = parts[first : first + per_group]
                pieces += self.transcribe(group, timestamps=True)
                release_free_memory()
                progress.update(len(group))
        keeps = [(t, base + keep_from, base + keep_to) for t, (_, _, keep_from, keep_to) in zip(pieces, plan)]
        return stitch(keeps, str(utt.audio_filepath), utt.duration)


def samples_to_waveform(samples: np.ndarray | torch.Tensor, sample_rate: int | None, model_rate: int) -> torch.Tensor:
    """(T,) or (T, C) samples at ``sample_rate`` -> (T',) float32 mono at the model's rate."""
    if sample_rate is None or sample_rate <= 0:
        raise AudioError(f"sample_rate={sample_rate}: samples need their sample rate (a positive number of Hz)")
    waveform = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if waveform.dim() == 2:
        waveform = waveform.mean(dim=1)
    if waveform.dim() != 1 or waveform.numel() == 0:
        raise AudioError(f"samples of shape {tuple(samples.shape)}: expected (T,) or (T, channels) with T > 0")
    if not torch.isfinite(waveform).all():
        raise AudioError("samples contain NaN or infinite values")
    resampled = resample(waveform, sample_rate, model_rate)
    if resampled.numel() == 0:  # as a file that short is refused (asr.audio.read_audio_at)
        raise AudioError(f"samples too short ({waveform.numel()} at {sample_rate} Hz are none at {model_rate} Hz)")
    return resampled


def raise_unusable(transcripts: list[Transcript]) -> list[Transcript]:
    """``transcripts``, or an AudioError for the first whose audio was unusable."""
    failed = next((t.error for t in transcripts if t.error is not None), None)
    if failed is not None:
        raise AudioError(failed)
    return transcripts


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
            files = audio_files(item)
            if not files:
                log.warning("%s: no audio files found in this folder", item)
            for path in files:
                add(path)
        elif item.suffix in (".jsonl", ".json"):
            utts.extend(read_manifest(item))
        else:
            add(item)
    return utts, failed
