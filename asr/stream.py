"""Live transcription: audio blocks in, partial and final results out.

Audio → :class:`asr.features.StreamingFeatures` (exactly the offline front end, frame by frame)
→ frame stacking → the acoustic model run chunk by chunk with right context
(:func:`asr.chunked.forward_chunk`, the LC-BLSTM scheme) → greedy partial
hypotheses after every chunk → at an endpoint (voice activity detection by webrtcvad, then
trailing silence), the segment's frames decoded by the recognizer's own decoder (greedy, or beam
search with an LM) as the final result. Sources (microphone, file, stdin) live in
:mod:`asr.sources`; this module never touches a device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

from asr.adaptation import OnlineAdaptation, Transcribed, confidence
from asr.decoding import greedy_decode
from asr.errors import ConfigError
from asr.features import RunningStats, StreamingFeatures
from asr.chunked import forward_chunk
from asr.model import Subsampling
from asr.transcribe import Recognizer

VAD_FRAME_MS = 30  # webrtcvad takes 10, 20 or 30 ms frames
VAD_RATES = (8000, 16000, 32000, 48000)


@dataclass(frozen=True)
class StreamOptions:
    chunk_ms: float = 240.0  # audio per model step; partial results come this often
    right_context_ms: float = 480.0  # look-ahead of the backward direction (bidirectional models)
    endpoint_silence_ms: float = 600.0  # trailing non-speech that ends a segment
    max_segment_s: float = 20.0  # a segment this long ends even without a pause
    vad_aggressiveness: int = 2  # webrtcvad mode 0 (keeps most audio as speech) .. 3
    # final results: "full" re-runs the whole bidirectional model over the finished segment
    # (offline accuracy, one extra pass per segment); "chunked" decodes the chunked outputs
    final_pass: str = "full"
    # a finished segment is cut to its sound: the frames from the first to the last within trim_db
    # dB of its loudest (asr.features.sound_span), as training cuts utterances (augment.trim_prob);
    # the full final pass, the speaker's statistics and the adaptation take that. The endpointer's
    # silence around the speech skews per-utterance normalization (docs/RESULTS.md, the live
    # check). 0 keeps the whole segment
    trim_db: float = 35.0
    # one speaker throughout: each segment is normalized with the statistics of all the speech
    # so far, not its own alone (models with per-utterance normalization)
    speaker_norm: bool = False
    # one speaker throughout: after each final result, a feature scale and shift are fitted to the
    # surest of the finished segments' finals (asr.adaptation.OnlineAdaptation); later segments use them
    adapt: bool = False

    def validate(self) -> None:
        for name in ("chunk_ms", "endpoint_silence_ms", "max_segment_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be positive")
        if not (math.isfinite(self.trim_db) and self.trim_db >= 0):
            raise ConfigError(f"trim_db={self.trim_db}: must be zero (no trimming) or a positive number of dB")
        if self.right_context_ms < 0:
            raise ConfigError(f"right_context_ms={self.right_context_ms}: must be zero or positive")
        if self.final_pass not in ("full", "chunked"):
            raise ConfigError(f"final_pass={self.final_pass!r}: must be 'full' or 'chunked'")
        if self.vad_aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"vad_aggressiveness={self.vad_aggressiveness}: must be 0, 1, 2 or 3")


def model_stream_options(recognizer: Recognizer, **given) -> StreamOptions:
    """Stream options for this model: a chunk-aware model (``model.train_chunk_frames``) streams
    with the chunk and right context it was trained with unless others are ``given``."""
    given = {name: value for name, value in given.items() if value is not None}
    cfg = recognizer.model.cfg
    if cfg.train_chunk_frames > 0:
        frame_ms = 1000 * recognizer.seconds_per_frame
        given.setdefault("chunk_ms", cfg.train_chunk_frames * frame_ms)
        given.setdefault("right_context_ms", cfg.train_right_context_frames * frame_ms)
    return StreamOptions(**given)


@dataclass(frozen=True)
class StreamEvent:
    type: str  # "partial" (replaced by the next event) or "final" (committed)
    text: str
    start: float  # seconds from the start of the stream
    end: float

    def as_dict(self) -> dict:
        return {"type": self.type, "text": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}


class StreamingRecognizer:
    """Feed audio with :meth:`accept`; it returns the events each block produced. :meth:`finish`
    ends the stream (flushing the last final result)."""

    def __init__(self, recognizer: Recognizer, options: StreamOptions = StreamOptions()):
        import webrtcvad

        options.validate()
        model = recognizer.model
        if model.subsample.kind is not Subsampling.stack:
            raise ConfigError("streaming needs a model with stacked-frame subsampling (model.subsampling=stack)")
        self.recognizer, self.options = recognizer, options
        self.rate = recognizer.sample_rate
        self.frame_seconds = recognizer.seconds_per_frame  # one model output frame
        self.factor = model.cfg.subsampling_factor
        self.chunk = max(1, round(options.chunk_ms / 1000 / self.frame_seconds))
        context = round(options.right_context_ms / 1000 / self.frame_seconds)
        self.right = context if model.cfg.bidirectional else 0  # a forward-only model needs none
        if self.rate not in VAD_RATES:
            raise ConfigError(f"streaming supports models at {VAD_RATES} Hz (voice activity detection); this one is {self.rate}")
        if options.speaker_norm:
            recognizer.extractor.check_speaker_norm()
        self.speaker = RunningStats() if options.speaker_norm else None
        self.adaptation: Optional[OnlineAdaptation] = None
        self.to_adapt: list[tuple[torch.Tensor, Transcribed]] = []  # finished segments not yet fitted to
        if options.adapt:
            recognizer.check_adaptable()
            extractor = recognizer.extractor
            self.adaptation = OnlineAdaptation(model, extractor.dim, extractor.cfg.hop_ms / 1000)
        self.vad = webrtcvad.Vad(options.vad_aggressiveness)
        self.vad_samples = self.rate * VAD_FRAME_MS // 1000
        self.samples_seen = 0  # since the start of the stream
        self.unvadded = np.zeros(0, dtype=np.float32)
        self._new_segment()

    # -- public -------------------------------------------------------------------------------
    def accept(self, samples: np.ndarray | torch.Tensor) -> list[StreamEvent]:
        """(N,) float32 mono samples at the model's rate → the events they caused."""
        block = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.to_adapt:  # here, not at the endpoint: their final results are out already
            segments, self.to_adapt = self.to_adapt, []
            self.adaptation.add(segments, self._normalize_segment)
        self.unvadded = np.concatenate([self.unvadded, block])
        events: list[StreamEvent] = []
        whole = len(self.unvadded) // self.vad_samples * self.vad_samples
        for start in range(0, whole, self.vad_samples):
            events += self._vad_frame(self.unvadded[start : start + self.vad_samples])
        self.unvadded = self.unvadded[whole:]
        return events

    def finish(self) -> list[StreamEvent]:
        """End of stream: the remaining audio is decoded and committed."""
        if len(self.unvadded):
            self._feed(self.unvadded)
            self.unvadded = np.zeros(0, dtype=np.float32)
        return self._endpoint()

    # -- segments -----------------------------------------------------------------------------
    def _new_segment(self) -> None:
        self.features = StreamingFeatures(self.recognizer.extractor, self.speaker)
        self.feature_frames = torch.zeros(0, self.recognizer.extractor.dim)  # not yet stacked
        self.pending = torch.zeros(0, self.recognizer.model.subsample.out_dim)  # stacked, not yet committed
        self.state: Optional[list] = None
        self.committed: list[torch.Tensor] = []  # (C, V) log-probs of each finished chunk
        self.segment_start = self.samples_seen
        self.segment_samples = 0
        self.speech_samples = 0
        self.trailing_silence = 0
        self.last_text = ""

    def _vad_frame(self, frame: np.ndarray) -> list[StreamEvent]:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        speech = self.vad.is_speech(pcm, self.rate)
        events = self._feed(frame)
        self.speech_samples += len(frame) if speech else 0
        self.trailing_silence = 0 if speech else self.trailing_silence + len(frame)
        silence_ms = 1000 * self.trailing_silence / self.rate
        heard = self.speech_samples > 0 or self.last_text != ""
        if not heard and silence_ms >= self.options.endpoint_silence_ms:
            self._new_segment()  # nothing said yet: drop the silence instead of decoding it
        elif heard and silence_ms >= self.options.endpoint_silence_ms:
            events += self._endpoint()
        elif self.segment_samples >= self.options.max_segment_s * self.rate:
            events += self._endpoint()
        return events

    def _feed(self, samples: np.ndarray) -> list[StreamEvent]:
        self.samples_seen += len(samples)
        self.segment_samples += len(samples)
        self._stack(self._adapted(self.features.accept(torch.from_numpy(samples))), final=False)
        events = []
        while self.pending.shape[0] >= self.chunk + self.right:
            provisional = self._step(self.chunk)
            events += self._partial(provisional)
        return events

    def _stack(self, feats: torch.Tensor, final: bool) -> None:
        """Feature frames → stacked model input frames, ``factor`` at a time (the rest waits;
        at the end it is zero-padded as the offline model pads)."""
        self.feature_frames = torch.cat([self.feature_frames, feats])
        usable = self.feature_frames.shape[0] // self.factor * self.factor
        if final and usable < self.feature_frames.shape[0]:
            usable = self.feature_frames.shape[0]
        if usable == 0:
            return
        stacked = self.recognizer.model.subsample(self.feature_frames[:usable].unsqueeze(0).to(self._device))[0]
        self.pending = torch.cat([self.pending, stacked.cpu()])
        self.feature_frames = self.feature_frames[usable:]

    @property
    def _device(self) -> torch.device:
        return self.recognizer.device

    def _step(self, chunk: int) -> torch.Tensor:
        """Run the model on the next chunk (+ right context); commit its first ``chunk`` frames and
        return the provisional log-probs of the right context."""
        window = self.pending[: chunk + self.right].unsqueeze(0).to(self._device)
        with torch.inference_mode():
            log_probs, self.state = forward_chunk(self.recognizer.model, window, chunk, self.state)
        log_probs = log_probs[0].cpu()
        self.committed.append(log_probs[:chunk])
        self.pending = self.pending[chunk:]
        return log_probs[chunk:]

    def _partial(self, provisional: torch.Tensor) -> list[StreamEvent]:
        frames = torch.cat(self.committed + [provisional])
        hyp = greedy_decode(frames.unsqueeze(0), torch.tensor([frames.shape[0]]))[0]
        text = self.recognizer.tokenizer.decode(hyp.tokens).strip()
        if not text and not self.last_text:
            return []
        self.last_text = text
        return [StreamEvent("partial", text, self.segment_start / self.rate, self.samples_seen / self.rate)]

    def _endpoint(self) -> list[StreamEvent]:
        """Decode the rest of the segment without look-ahead beyond its end, commit it, start anew."""
        self._stack(self._adapted(self.features.finish()), final=True)
        if self.options.final_pass == "chunked":  # a full final pass recomputes every frame anyway
            while self.pending.shape[0] > self.chunk + self.right:
                self._step(self.chunk)
            if self.pending.shape[0]:  # the last chunk: its right context is the end of the segment
                self._step(self.pending.shape[0])
        events = []
        if self.features.raw and (self.speech_samples or self.last_text):  # the VAD may miss quiet speech
            frames = self._final_log_probs()
            # on the model's device: the recognizer's decoder may be the GPU beam search
            nbest = self.recognizer.decoder(frames.unsqueeze(0).to(self._device), torch.tensor([frames.shape[0]]))[0]
            text = self.recognizer.tokenizer.decode(nbest[0].tokens).strip() if nbest else ""
            if text or self.last_text:
                events.append(StreamEvent("final", text, self.segment_start / self.rate, self.samples_seen / self.rate))
            raw = self.features.segment(self.options.trim_db)  # the segment cut to its sound
            if self.speaker is not None:  # a segment with speech: the speaker's statistics grow by it
                self.speaker.add(raw)
            if self.adaptation is not None and text:
                self.to_adapt.append((raw, (nbest[0].tokens, confidence(frames, nbest[0].tokens))))
        self._new_segment()
        return events

    def _final_log_probs(self) -> torch.Tensor:
        """(T', V) log-probs of the whole segment for its final result."""
        if self.options.final_pass == "chunked":
            return torch.cat(self.committed)
        # the segment's features as the offline front end computes them (with "utterance"
        # normalization the chunks had running statistics; the whole segment's are known now)
        with torch.inference_mode():  # one chunk covering the segment: the offline forward pass
            features = self._adapted(self.features.utterance(self.options.trim_db))
            inputs = self.recognizer.model.subsample(features.unsqueeze(0).to(self._device))
            log_probs, _ = forward_chunk(self.recognizer.model, inputs, inputs.shape[1])
        return log_probs[0].cpu()

    def _adapted(self, features: torch.Tensor) -> torch.Tensor:
        """(T, F) normalized features through the speaker's transform so far (with ``adapt``)."""
        return features if self.adaptation is None else self.adaptation.transform(features)

    def _normalize_segment(self, log_mel: torch.Tensor) -> torch.Tensor:
        """A finished segment's features normalized as the full final pass would normalize them
        now (with ``final_pass="chunked"`` too: the chunks' running statistics approximate them)."""
        stats = None if self.speaker is None else tuple(x.float() for x in self.speaker.mean_std())
        return self.recognizer.extractor.normalize(log_mel, stats)


def stream_events(recognizer: StreamingRecognizer, blocks: Iterable[np.ndarray]) -> Iterator[StreamEvent]:
    """Every event of a whole stream of blocks, ending with :meth:`StreamingRecognizer.finish`."""
    for block in blocks:
        yield from recognizer.accept(block)
    yield from recognizer.finish()
