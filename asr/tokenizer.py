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

from asr.errors import TokenizerError

log = logging.getLogger(__name__)

BLANK = "<blank>"
BLANK_ID = 0


class DigitPolicy(str, Enum):
    keep = "keep"  # digits stay as they are (they become characters or pieces of their own)
    spell = "spell"  # digit strings become English number words: "42" -> "forty two"


class TokenizerKind(str, Enum):
    char = "char"
    bpe = "bpe"
    unigram = "unigram"


@dataclass
class TokenizerConfig:
    """Which tokenizer to train on the training text, and the declared text normalization."""

    kind: TokenizerKind = TokenizerKind.char
    vocab_size: int = 256  # sentencepiece kinds only; the blank comes on top
    lowercase: bool = True
    keep_punctuation: bool = False  # apostrophes are always kept
    digits: DigitPolicy = DigitPolicy.keep


@dataclass(frozen=True)
class TextNormalization:
    """The declared normalization applied identically to training text, LM text and scoring:
    Unicode NFKC, optional spelling of digit strings as English words, optional lower-casing,
    punctuation (except apostrophes) replaced by spaces, whitespace collapsed."""

    lowercase: bool = True
    keep_punctuation: bool = False
    digits: str = "keep"  # a DigitPolicy value

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        if self.digits == DigitPolicy.spell.value:
            text = spell_digits(text)
        if self.lowercase:
            text = text.lower()
        if not self.keep_punctuation:
            text = "".join(
                ch if ch == "'" or not unicodedata.category(ch).startswith(("P", "S")) else " " for ch in text
            )
        return re.sub(r"\s+", " ", text).strip()


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def number_words(n: int) -> str:
    """English cardinal words of a non-negative integer: 1905 -> "one thousand nine hundred five"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def spell_digits(text: str) -> str:
    """Replace digit strings by English words; thousands separators ("1,000") are dropped, and
    strings with a leading zero or over 15 digits ("007", card numbers) are read digit by digit."""
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)

    def words(match: re.Match) -> str:
        digits = match.group()
        if (digits.startswith("0") and len(digits) > 1) or len(digits) > 15:
            return " " + " ".join(_ONES[int(d)] for d in digits) + " "
        return " " + number_words(int(digits)) + " "

    return re.sub(r"\d+", words, text)


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
        import torch  # only here: the torch-free runtime (asr.onnx_model) reads tokenizers too

        return {
            "kind": self.kind,
            # a uint8 tensor, because weights_only loading accepts tensors but not bytes
            "model_proto": torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8),
            "normalization": _norm_dict(self.normalize),
        }


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """Build the tokenizer that ``cfg`` describes from the training transcripts."""
    normalize = TextNormalization(cfg.lowercase, cfg.keep_punctuation, DigitPolicy(cfg.digits).value)
    kind = TokenizerKind(cfg.kind)
    if kind is TokenizerKind.char:
        return CharTokenizer.train(texts, normalize)
    return SentencePieceTokenizer.train(texts, kind.value, cfg.vocab_size, normalize)


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Inverse of :meth:`Tokenizer.to_dict`."""
    normalize = TextNormalization(**data["normalization"])
    if data["kind"] == "char":
        return CharTokenizer(list(data["symbols"]), normalize)
    proto = data["model_proto"]  # a uint8 tensor (checkpoints) or bytes (exported models)
    proto = proto if isinstance(proto, bytes) else proto.numpy().tobytes()
    return SentencePieceTokenizer(proto, data["kind"], normalize)


def _norm_dict(norm: TextNormalization) -> dict:
    return {"lowercase": norm.lowercase, "keep_punctuation": norm.keep_punctuation, "digits": norm.digits}
