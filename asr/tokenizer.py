"""Text normalization and tokenizers (characters or sentencepiece), CTC blank at index 0.

Tokenizers serialize to plain data (:meth:`Tokenizer.to_dict`) so a checkpoint can carry them
and still load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

import sentencepiece as spm
import torch

from asr.errors import TokenizerError

log = logging.getLogger(__name__)

BLANK = "<blank>"
BLANK_ID = 0


class TokenizerKind(str, Enum):
    char = "char"
    bpe = "bpe"
    unigram = "unigram"


@dataclass
class TokenizerConfig:
    """Which tokenizer to train on the training text, and the declared text normalization."""

    kind: TokenizerKind = TokenizerKind.char
    vocab_size: int = 128  # sentencepiece kinds only; the blank comes on top
    lowercase: bool = True
    keep_punctuation: bool = False  # apostrophes are always kept


@dataclass(frozen=True)
class TextNormalization:
    """The declared normalization applied identically to training text, LM text and scoring:
    Unicode NFKC, optional lower-casing, punctuation (except apostrophes) replaced by spaces,
    whitespace collapsed."""

    lowercase: bool = True
    keep_punctuation: bool = False

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        if self.lowercase:
            text = text.lower()
        if not self.keep_punctuation:
            text = "".join(
                ch if ch == "'" or not unicodedata.category(ch).startswith(("P", "S")) else " " for ch in text
            )
        return re.sub(r"\s+", " ", text).strip()


class Tokenizer:
    """Maps normalized text to token ids 1..V-1 and back; id 0 is the CTC blank."""

    kind: str
    normalize: TextNormalization

    @property
    def vocab_size(self) -> int:
        """Number of model outputs, blank included."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, symbols: list[str], normalize: TextNormalization):
        self.symbols = [BLANK] + list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.normalize = normalize
        self._warned: set[str] = set()

    @classmethod
    def train(cls, texts: Iterable[str], normalize: TextNormalization) -> CharTokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(normalize(text))
        if not chars:
            raise TokenizerError("cannot build a character vocabulary: the training text is empty")
        return cls(sorted(chars), normalize)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        ids = []
        for ch in self.normalize(text):
            idx = self.index.get(ch)
            if idx is None:
                if ch not in self._warned:
                    self._warned.add(ch)
                    log.warning("character %r is not in the tokenizer's vocabulary; it is dropped", ch)
                continue
            ids.append(idx)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i != BLANK_ID)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols[1:], "normalization": _norm_dict(self.normalize)}


class SentencePieceTokenizer(Tokenizer):
    """sentencepiece BPE or unigram; piece ids are shifted by one to make room for the blank."""

    def __init__(self, model_proto: bytes, kind: str, normalize: TextNormalization):
        self.kind = kind
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.normalize = normalize

    @classmethod
    def train(cls, texts: Iterable[str], kind: str, vocab_size: int, normalize: TextNormalization):
        sentences = [t for t in (normalize(x) for x in texts) if t]
        if not sentences:
            raise TokenizerError("cannot train sentencepiece: the training text is empty")
        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=buffer,
                model_type=kind,
                vocab_size=vocab_size,
                character_coverage=1.0,
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                hard_vocab_limit=False,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise TokenizerError(f"tokenizer.vocab_size={vocab_size}: sentencepiece failed ({exc})") from None
        return cls(buffer.getvalue(), kind, normalize)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size() + 1

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(self.normalize(text))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i != BLANK_ID])

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            # a uint8 tensor, because weights_only loading accepts tensors but not bytes
            "model_proto": torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8),
            "normalization": _norm_dict(self.normalize),
        }


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """Build the tokenizer that ``cfg`` describes from the training transcripts."""
    normalize = TextNormalization(lowercase=cfg.lowercase, keep_punctuation=cfg.keep_punctuation)
    kind = TokenizerKind(cfg.kind)
    if kind is TokenizerKind.char:
        return CharTokenizer.train(texts, normalize)
    return SentencePieceTokenizer.train(texts, kind.value, cfg.vocab_size, normalize)


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Inverse of :meth:`Tokenizer.to_dict`."""
    normalize = TextNormalization(**data["normalization"])
    if data["kind"] == "char":
        return CharTokenizer(list(data["symbols"]), normalize)
    proto = data["model_proto"]
    return SentencePieceTokenizer(proto.numpy().tobytes(), data["kind"], normalize)


def _norm_dict(norm: TextNormalization) -> dict:
    return {"lowercase": norm.lowercase, "keep_punctuation": norm.keep_punctuation}
