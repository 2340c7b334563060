"""Export: a trained model as one ONNX file that runs without PyTorch.

The graph is written node by node (``onnx.helper``), not traced: each recurrent layer becomes
one ONNX ``LSTM``/``GRU``/``RNN`` op with ``sequence_lens``, so a padded batch gives every
utterance exactly its unpadded result (the backward direction starts at each utterance's own
end), both the batch and the time axis stay dynamic, and onnxruntime's quantizer finds the
recurrent weights it knows how to make int8. Everything decoding needs -- the tokenizer, the
front end's settings, filters and normalization statistics -- travels in the file's metadata
(:mod:`asr.onnx_model` reads it back).

Inputs ``features`` (B, T, F) float32 and ``lengths`` (B,) int64; outputs ``log_probs``
(B, ceil(T / factor), V) float32 (zeros past each utterance's end) and ``out_lengths`` (B,) int64.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from asr.atomic import atomic_write
from asr.checkpoint import build_components, config_to_dict, load_checkpoint
from asr.errors import CheckpointError
from asr.features import FeatureExtractor
from asr.model import AcousticModel, CellType, Subsampling
from asr.onnx_model import FORMAT, FORMAT_VERSION
from asr.tokenizer import Tokenizer

log = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization
# PyTorch stacks gate weights as LSTM (i, f, g, o) and GRU (r, z, n); ONNX as (i, o, f, c) and (z, r, h)
_GATE_ORDER = {CellType.lstm: (0, 3, 1, 2), CellType.gru: (1, 0, 2), CellType.rnn: (0,)}
_OP = {CellType.lstm: "LSTM", CellType.gru: "GRU", CellType.rnn: "RNN"}


class _Graph:
    """Nodes and initializers under construction, with fresh value names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._count = 0

    def const(self, value: np.ndarray | torch.Tensor, name: str = "c") -> str:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        name = self._name(name)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs) -> str | list[str]:
        names = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"


def _subsample(g: _Graph, model: AcousticModel, features: str) -> str:
    """(B, T, F) -> (B, ceil(T / f), D), as :class:`asr.model.Subsampler`."""
    sub, factor = model.subsample, model.subsample.factor
    if sub.kind is Subsampling.stack:
        frames = g.op("Gather", g.op("Shape", features), g.const(np.int64(1)))
        pad = g.op("Mod", g.op("Sub", g.const(np.int64(factor)), g.op("Mod", frames, g.const(np.int64(factor)))),
                   g.const(np.int64(factor)))
        zeros = g.const(np.zeros(1, np.int64))
        pads = g.op("Concat", zeros, zeros, zeros, zeros, g.op("Unsqueeze", pad, g.const(np.array([0]))), zeros, axis=0)
        padded = g.op("Pad", features, pads)
        return g.op("Reshape", padded, g.const(np.array([0, -1, sub.out_dim], np.int64)))
    conv = sub.conv
    y = g.op("Conv", g.op("Unsqueeze", features, g.const(np.array([1]))), g.const(conv.weight), g.const(conv.bias),
             kernel_shape=list(conv.kernel_size), strides=list(conv.stride), pads=[*conv.padding, *conv.padding])
    y = _gelu(g, y)
    return g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 1, 3]), g.const(np.array([0, 0, -1], np.int64)))


def _gelu(g: _Graph, x: str) -> str:
    """0.5 x (1 + erf(x / sqrt 2)): torch's exact GELU."""
    erf = g.op("Erf", g.op("Mul", x, g.const(np.float32(1 / np.sqrt(2)))))
    return g.op("Mul", g.op("Mul", x, g.const(np.float32(0.5))), g.op("Add", erf, g.const(np.float32(1.0))))


def _recurrent(g: _Graph, rnn: torch.nn.RNNBase, cell: CellType, x: str, seq_lens: str) -> str:
    """One (bi)directional layer, time-major: (T, B, D) -> (T, B, H * directions)."""
    order = _GATE_ORDER[cell]
    hidden = rnn.hidden_size

    def gates(weight: torch.Tensor) -> np.ndarray:
        chunks = weight.detach().float().numpy().reshape(len(order), hidden, *weight.shape[1:])
        return np.concatenate([chunks[i] for i in order])

    suffixes = [""] + (["_reverse"] if rnn.bidirectional else [])
    w = np.stack([gates(getattr(rnn, f"weight_ih_l0{s}")) for s in suffixes])
    r = np.stack([gates(getattr(rnn, f"weight_hh_l0{s}")) for s in suffixes])
    b = np.stack([np.concatenate([gates(getattr(rnn, f"bias_ih_l0{s}")), gates(getattr(rnn, f"bias_hh_l0{s}"))])
                  for s in suffixes])
    attrs = {"hidden_size": hidden, "direction": "bidirectional" if rnn.bidirectional else "forward"}
    if cell is CellType.gru:
        attrs["linear_before_reset"] = 1  # PyTorch applies the reset gate after the recurrent product
    if cell is CellType.rnn and getattr(rnn, "nonlinearity", "tanh") == "relu":
        attrs["activations"] = ["Relu"] * len(suffixes)
    y = g.op(_OP[cell], x, g.const(w, "W"), g.const(r, "R"), g.const(b, "B"), seq_lens,
             outputs=3 if cell is CellType.lstm else 2, **attrs)[0]  # (T, directions, B, H)
    return g.op("Reshape", g.op("Transpose", y, perm=[0, 2, 1, 3]), g.const(np.array([0, 0, -1], np.int64)))


def _between(g: _Graph, block: torch.nn.Sequential, x: str) -> str:
    """Projection and normalization between layers (evaluation mode: batch norm's running stats)."""
    for layer in block:
        if isinstance(layer, torch.nn.Linear):
            x = g.op("Add", g.op("MatMul", x, g.const(layer.weight.T)), g.const(layer.bias))
        elif isinstance(layer, torch.nn.BatchNorm1d):
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            x = g.op("Add", g.op("Mul", x, g.const(scale)), g.const(layer.bias - layer.running_mean * scale))
        elif isinstance(layer, torch.nn.LayerNorm):
            x = g.op("LayerNormalization", x, g.const(layer.weight), g.const(layer.bias), axis=-1, epsilon=layer.eps)
        else:
            raise CheckpointError(f"cannot export a {type(layer).__name__} between recurrent layers")
    return x


def model_graph(model: AcousticModel) -> onnx.ModelProto:
    """The acoustic model (evaluation mode) as an ONNX model: features, lengths -> log_probs, out_lengths."""
    g = _Graph()
    cfg = model.cfg
    x = _subsample(g, model, "features")
    factor = np.int64(cfg.subsampling_factor)
    out_lengths = g.op("Div", g.op("Add", "lengths", g.const(factor - 1)), g.const(factor))
    seq_lens = g.op("Cast", g.op("Max", out_lengths, g.const(np.int64(1))), to=TensorProto.INT32)
    x = g.op("Transpose", x, perm=[1, 0, 2])  # time-major, as the ONNX recurrent ops take it
    for layer, rnn in enumerate(model.rnns):
        x = _recurrent(g, rnn, CellType(cfg.cell), x, seq_lens)
        if layer < len(model.between):
            x = _between(g, model.between[layer], x)
    logits = g.op("Add", g.op("MatMul", x, g.const(model.classifier.weight.T)), g.const(model.classifier.bias))
    log_probs = g.op("Transpose", g.op("LogSoftmax", logits, axis=-1), perm=[1, 0, 2])  # (B, T', V)
    steps = g.op("Range", g.const(np.int64(0)), g.op("Gather", g.op("Shape", log_probs), g.const(np.int64(1))),
                 g.const(np.int64(1)))
    valid = g.op("Less", g.op("Unsqueeze", steps, g.const(np.array([0]))),
                 g.op("Unsqueeze", out_lengths, g.const(np.array([1]))))  # (B, T')
    g.nodes.append(helper.make_node("Where", [g.op("Unsqueeze", valid, g.const(np.array([2]))), log_probs,
                                              g.const(np.float32(0.0))], ["log_probs"]))
    g.nodes.append(helper.make_node("Identity", [out_lengths], ["out_lengths"]))
    graph = helper.make_graph(
        g.nodes, "asr_acoustic_model",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "frames", model.input_dim]),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["batch", "out_frames", model.vocab_size]),
         helper.make_tensor_value_info("out_lengths", TensorProto.INT64, ["batch"])],
        g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="asr")
    onnx.checker.check_model(proto)
    return proto


def _b64(array: torch.Tensor) -> str:
    return base64.b64encode(array.detach().float().contiguous().numpy().tobytes()).decode("ascii")


def metadata(model: AcousticModel, extractor: FeatureExtractor, tokenizer: Tokenizer) -> dict[str, str]:
    """What decoding needs besides the graph, as the file's string metadata."""
    spectrogram = extractor.mel.spectrogram
    window = torch.zeros(spectrogram.n_fft)  # torch.stft centres a shorter window in n_fft
    start = (spectrogram.n_fft - spectrogram.win_length) // 2
    window[start : start + spectrogram.win_length] = spectrogram.window
    tokens = tokenizer.to_dict()
    if "model_proto" in tokens:
        tokens["model_proto"] = base64.b64encode(tokens["model_proto"].numpy().tobytes()).decode("ascii")
    features = {"config": config_to_dict(extractor.cfg), "n_fft": spectrogram.n_fft, "window": _b64(window),
                "mel_filters": _b64(extractor.mel.mel_scale.fb), "mean": _b64(extractor.mean),
                "std": _b64(extractor.std)}
    model_info = {"config": config_to_dict(model.cfg), "input_dim": model.input_dim, "vocab_size": model.vocab_size}
    return {"asr.format": FORMAT, "asr.format_version": str(FORMAT_VERSION), "asr.model": json.dumps(model_info),
            "asr.features": json.dumps(features), "asr.tokenizer": json.dumps(tokens)}


def export_onnx(checkpoint: str | Path, output: str | Path, int8: bool = False) -> Path:
    """Write ``checkpoint`` (a ``model.pt``) as an ONNX model with its decoding metadata.

    Args:
        int8: quantize the recurrent and linear weights to int8 (onnxruntime's dynamic
            quantization: activations are quantized on the fly, per batch).

    Raises:
        CheckpointError: the checkpoint is missing or unusable (naming the file).
    """
    model, extractor, tokenizer = build_components(load_checkpoint(checkpoint), checkpoint)
    proto = model_graph(model.eval())
    if int8:
        proto = _quantized(proto)
    for key, value in metadata(model, extractor, tokenizer).items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    output = Path(output)
    with atomic_write(output, "wb") as f:
        f.write(proto.SerializeToString())
    log.info("%s: exported %s (%s, %.1f MB)", output, checkpoint, "int8" if int8 else "float32",
             output.stat().st_size / 1e6)
    return output


def _quantized(proto: onnx.ModelProto) -> onnx.ModelProto:
    """int8 weights for the recurrent and linear layers; activations quantized dynamically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    # the quantizer logs on the root logger: advice for vision models, a line per tensor it skips
    quiet = _BelowError()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(proto, source)
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "MatMul"])
            return onnx.load(target)
    finally:
        root.removeFilter(quiet)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR
