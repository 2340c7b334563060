"""Exported models behind the toolkit's one :class:`asr.transcribe.Recognizer`.

:class:`OnnxAcousticModel` gives an :class:`asr.onnx_model.OnnxModel` the call of
:class:`asr.model.AcousticModel` (tensors in, tensors out), so ``asr transcribe``, ``asr
evaluate``, LM tuning and the Python API run exported models through the same batching,
decoders (greedy, beam search with an LM) and timestamps. Streaming
(:class:`OnnxStreamingRecognizer`) runs the whole model on the segment so far for each partial
result (an exported graph has no chunk-by-chunk state) and on the finished segment for its final.
"""

from __future__ import annotations

from pathlib import Path

import torch

from asr.checkpoint import config_from_dict
from asr.errors import ConfigError
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import ModelConfig, Subsampler
from asr.onnx_model import OnnxModel
from asr.stream import StreamingRecognizer
from asr.tokenizer import Tokenizer


class OnnxAcousticModel:
    """features (B, T, F), lengths (B,) -> log_probs (B, T', V), out_lengths (B,) through onnxruntime."""

    training = False

    def __init__(self, model: OnnxModel):
        self.onnx = model
        self.cfg = config_from_dict(ModelConfig, model.info["config"])
        self.input_dim, self.vocab_size = model.info["input_dim"], model.info["vocab_size"]
        self.subsample = Subsampler(self.cfg.subsampling, self.cfg.subsampling_factor, self.input_dim,
                                    self.cfg.conv_channels)  # for its kind and frame arithmetic only

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, out_lengths = self.onnx(features.float().cpu().numpy(), lengths.cpu().numpy())
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)

    def to(self, device: torch.device | str) -> OnnxAcousticModel:
        if torch.device(device).type != "cpu":
            raise ConfigError(f"device={device}: exported models run on the CPU (onnxruntime); use --device cpu")
        return self

    def eval(self) -> OnnxAcousticModel:
        return self

    def train(self, mode: bool = True) -> OnnxAcousticModel:
        return self


def onnx_components(path: str | Path, device: str = "cpu") -> tuple[OnnxAcousticModel, FeatureExtractor, Tokenizer]:
    """Model, torch front end and tokenizer of an exported model (as :func:`asr.checkpoint.build_components`)."""
    if str(device) not in ("auto", "cpu"):
        raise ConfigError(f"device={device}: exported models run on the CPU (onnxruntime); use --device cpu")
    model = OnnxModel(path)
    extractor = FeatureExtractor(config_from_dict(FeatureConfig, model.feature_config),
                                 torch.from_numpy(model.mean.copy()), torch.from_numpy(model.std.copy()))
    return OnnxAcousticModel(model), extractor, model.tokenizer


class OnnxStreamingRecognizer(StreamingRecognizer):
    """Streaming with an exported model: a partial result after every ``chunk_ms`` of new audio
    from the whole segment so far; the final from the whole segment cut to its sound
    (``final_pass="full"``, ``trim_db``). Never adapted (``adapt`` is refused: an exported model cannot be fitted to), so the
    speaker transform the base class applies is left out here."""

    def _new_segment(self) -> None:
        super()._new_segment()
        self.frames_at_partial = 0

    def _feed(self, samples) -> list:
        self.samples_seen += len(samples)
        self.segment_samples += len(samples)
        self.feature_frames = torch.cat([self.feature_frames, self.features.accept(torch.from_numpy(samples))])
        if self.feature_frames.shape[0] - self.frames_at_partial < self.chunk * self.factor:
            return []
        self.frames_at_partial = self.feature_frames.shape[0]
        return self._partial(self._log_probs(self.feature_frames))

    def _stack(self, feats: torch.Tensor, final: bool) -> None:
        self.feature_frames = torch.cat([self.feature_frames, feats])  # the model stacks frames itself

    def _final_log_probs(self) -> torch.Tensor:
        return self._log_probs(self.features.utterance(self.options.trim_db))

    def _log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """(T, F) features -> (T', V) log-probs of the whole model."""
        log_probs, _ = self.recognizer.model(features.unsqueeze(0), torch.tensor([features.shape[0]]))
        return log_probs[0]
