"""A bidirectional-LSTM CTC speech recognition toolkit.

From Python::

    import asr
    model = asr.load_model("exp/model.pt")
    print(model.transcribe("a.wav").text)

Data flows one way: manifest -> audio -> features -> model -> decoder -> text; each stage lives
in one module (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_model", "Recognizer", "Transcript", "WordTiming", "StreamEvent", "DecodingOptions", "AsrError",
           "__version__"]

if TYPE_CHECKING:
    from asr.transcribe import Recognizer

_LAZY = {"Recognizer": "asr.transcribe", "Transcript": "asr.transcript", "WordTiming": "asr.transcript",
         "StreamEvent": "asr.stream", "DecodingOptions": "asr.decoding", "AsrError": "asr.errors"}


def load_model(path: str | Path, device: str = "auto", **decoding: Any) -> Recognizer:
    """A trained model ready to transcribe, evaluate and stream.

    Args:
        path: ``model.pt`` from ``asr train``, or ``model.onnx`` from ``asr export`` (run by
            onnxruntime on the CPU, with the same decoders).
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
        decoding: fields of :class:`asr.decoding.DecodingOptions`, as the CLI's decoding options:
            ``method="beam"``, ``beam_size=32``, ``lm="lm.arpa"``, ``lm_weight=``, ``word_score=``,
            ``lexicon=``, ``nbest=``... An ``lm`` or ``lexicon`` implies beam search; an LM tuned
            with ``asr lm tune`` brings its tuned weights unless they are given.

    Raises:
        asr.errors.AsrError: a missing or unusable checkpoint, an unknown option or an impossible
            value (the message names the file or the field).
    """
    from asr.decoding import decoding_options
    from asr.transcribe import Recognizer

    return Recognizer.load(path, device=device, options=decoding_options(**decoding))


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # imported on first use: `import asr` stays cheap for the command line
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")
