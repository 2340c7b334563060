"""An exported model (``asr export``) in onnxruntime: no PyTorch needed.

:class:`OnnxModel` reads the file, checks its metadata and runs the acoustic model on numpy
arrays; its :meth:`OnnxModel.features` is the front end of :class:`asr.features.FeatureExtractor`
in numpy, from the filters and statistics stored in the file. The full toolkit runs it behind
its one :class:`asr.transcribe.Recognizer` (:mod:`asr.onnx_backend`: every decoder, timestamps,
streaming); without PyTorch (``pip install asr[onnx]``), :mod:`asr.deploy` transcribes files.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np

from asr.errors import AudioError, CheckpointError
from asr.tokenizer import Tokenizer, tokenizer_from_dict

log = logging.getLogger(__name__)

FORMAT = "asr-onnx"
FORMAT_VERSION = 1
STFT_BLOCK_FRAMES = 4096  # frames per FFT block: bounded memory on long files


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an exported model (by its ``.onnx`` suffix) rather than a checkpoint."""
    return Path(path).suffix.lower() == ".onnx"


def _floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


class OnnxModel:
    """An exported acoustic model with its front end and tokenizer.

    Raises:
        CheckpointError: the file is missing, not ONNX, not an asr export, of a newer export
            format, or lacks the tokenizer or front-end metadata (the message names the file).
    """

    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's choice (one per core)
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        # no busy-waiting for the next run: spinning threads take the cores from the front end and
        # the decoder between runs (tiny torch ops took 1 ms instead of 20 us beside them)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
            raise CheckpointError(f"{path}: not an ONNX model ({str(exc).strip().splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("asr.format") != FORMAT:
            raise CheckpointError(f"{path}: an ONNX model, but not one written by `asr export` (no asr metadata)")
        version = int(meta.get("asr.format_version", "0"))
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: export format {version}; this asr reads format {FORMAT_VERSION} "
                                  "(export the model again with this version)")
        for key in ("asr.model", "asr.features", "asr.tokenizer"):
            if key not in meta:
                raise CheckpointError(f"{path}: the export's {key.split('.')[1]} metadata is missing")
        try:
            self.info = json.loads(meta["asr.model"])
            self.front = json.loads(meta["asr.features"])
            self.tokenizer = self._tokenizer(json.loads(meta["asr.tokenizer"]))
            self.window, self.filters = _floats(self.front["window"]), _floats(self.front["mel_filters"])
            self.filters = self.filters.reshape(-1, self.front["config"]["n_mels"])
            self.mean, self.std = _floats(self.front["mean"]), _floats(self.front["std"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable export metadata ({exc})") from None

    def _tokenizer(self, data: dict) -> Tokenizer:
        if "model_proto" in data:
            data["model_proto"] = base64.b64decode(data["model_proto"])
        return tokenizer_from_dict(data)

    @property
    def feature_config(self) -> dict:
        """The front end's :class:`asr.features.FeatureConfig` as plain data."""
        return self.front["config"]

    @property
    def sample_rate(self) -> int:
        return int(self.feature_config["sample_rate"])

    @property
    def seconds_per_frame(self) -> float:
        return self.feature_config["hop_ms"] / 1000 * self.info["config"]["subsampling_factor"]

    def __call__(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features (B, T, F) float32, lengths (B,) -> log_probs (B, T', V), out_lengths (B,)."""
        log_probs, out_lengths = self.session.run(
            None, {"features": np.ascontiguousarray(features, dtype=np.float32), "lengths": lengths.astype(np.int64)})
        return log_probs, out_lengths

    def features(self, waveform: np.ndarray) -> np.ndarray:
        """(T,) float32 samples at :attr:`sample_rate` -> (frames, n_mels) normalized log-mel
        features, as :class:`asr.features.FeatureExtractor` computes them (centered STFT with
        reflection at the edges)."""
        cfg = self.feature_config
        n_fft, hop = self.front["n_fft"], int(round(cfg["sample_rate"] * cfg["hop_ms"] / 1000))
        if waveform.size == 0:
            raise AudioError("no samples to compute features from")
        frames = waveform.size // hop + 1
        half = n_fft // 2
        if waveform.size < half + 1:  # reflection needs more samples than it adds
            waveform = np.pad(waveform, (0, half + 1 - waveform.size))
        padded = np.pad(waveform.astype(np.float32), (half, half), mode="reflect")
        windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:frames]  # a view: no copy
        blocks = []
        for first in range(0, frames, STFT_BLOCK_FRAMES):
            spectrum = np.fft.rfft(windows[first : first + STFT_BLOCK_FRAMES] * self.window, axis=1)  # float32 in, out
            power = spectrum.real**2 + spectrum.imag**2
            blocks.append(np.log(power @ self.filters + np.float32(1e-6)))
        return self._normalize(np.concatenate(blocks))

    def _normalize(self, feats: np.ndarray) -> np.ndarray:
        mode = self.feature_config["normalization"]
        if mode == "global":
            return (feats - self.mean) / self.std
        if mode == "utterance":
            return (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-5)
        return feats
