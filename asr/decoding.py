"""Turn frame-level log-probabilities into token sequences: greedy or beam search.

Greedy CTC decoding is fully vectorized: one argmax, one mask, one transfer to Python.
Beam search runs flashlight's CTC decoder (through torchaudio) on the CPU, lexicon-free or
constrained by a lexicon, optionally fused with a word n-gram LM (KenLM ARPA or binary) or a
token-level LM object (:class:`torchaudio.models.decoder.CTCDecoderLM`, e.g. the char-RNN LM).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from asr.errors import DecodingError
from asr.hotwords import hotword_lm, read_hotwords
from asr.lexicon import (
    BLANK_ALIAS, UNK_WORD, WORD_BOUNDARY, arpa_words, decoder_symbols, read_lexicon_words, spell, write_lexicon,
)
from asr.tokenizer import BLANK_ID, CharTokenizer, Tokenizer

log = logging.getLogger(__name__)

IMPOSSIBLE = -1e4  # a log-probability no hypothesis survives (beam thresholds are far smaller)
_REPORTED_LEXICONS: set[str] = set()  # LM files whose lexicon was reported once


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # token ids, blanks and repeats removed
    frames: tuple[int, ...]  # output frame at which each token was emitted
    score: float  # greedy: sum of the chosen frames' log-probabilities; beam: the decoder's total score


class DecodeMethod(str, Enum):
    greedy = "greedy"
    beam = "beam"


@dataclass
class DecodingOptions:
    """How frame outputs become text (also the ``decode`` config group, which sets how dev sets
    are decoded during training). Beam fields are ignored by greedy decoding."""

    method: DecodeMethod = DecodeMethod.greedy
    beam_size: int = 32  # hypotheses kept after each frame
    beam_size_token: Optional[int] = None  # tokens tried per frame (None: all)
    beam_threshold: float = 10.0  # prune hypotheses this far below the best (pyctcdecode's default too)
    lm: Optional[str] = None  # KenLM ARPA/binary word n-gram file, or a char LM from 'asr lm train'
    lexicon: Optional[str] = None  # one word per line (first field); default with an LM: the LM's words
    hotwords: Optional[str] = None  # 'word [boost]' per line: favoured by beam search with a word LM (asr.hotwords)
    lm_weight: float = 0.5  # alpha
    word_score: float = 0.0  # beta, added per word (lexicon decoding)
    nbest: int = 1
    log_add: bool = True  # merge equal prefixes by summing their paths (CTC prefix search), not max
    # within a run of frames whose blank probability exceeds this, the search visits only the
    # first (None: every frame); a peaky CTC model spends most frames on near-certain blanks
    blank_skip: Optional[float] = 0.999
    # at each frame, tokens below this log-probability are not tried (the frame's best always is);
    # None: all are (pyctcdecode's token_min_logp, same default)
    token_min_logp: Optional[float] = -5.0

    def validate(self) -> None:
        method = DecodeMethod(self.method)
        # impossible values are errors whichever method is chosen
        if self.beam_size < 1:
            raise DecodingError(f"beam_size={self.beam_size}: must be at least 1")
        if self.beam_size_token is not None and self.beam_size_token < 1:
            raise DecodingError(f"beam_size_token={self.beam_size_token}: must be at least 1")
        if self.nbest < 1 or self.nbest > self.beam_size:
            raise DecodingError(f"nbest={self.nbest}: must be between 1 and beam_size ({self.beam_size})")
        if self.beam_threshold <= 0:
            raise DecodingError(f"beam_threshold={self.beam_threshold}: must be positive")
        if self.token_min_logp is not None and self.token_min_logp >= 0:
            raise DecodingError(f"token_min_logp={self.token_min_logp}: must be a negative log-probability, or None")
        if self.blank_skip is not None and not 0.0 < self.blank_skip < 1.0:
            raise DecodingError(f"blank_skip={self.blank_skip}: must be between 0 and 1 (exclusive), or None")
        for name in ("lm", "lexicon", "hotwords"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise DecodingError(f"{name}={value}: file not found")
        if method is DecodeMethod.greedy and (self.lm or self.lexicon):
            raise DecodingError("an LM or lexicon needs beam search (decode=beam / --decode beam)")
        if self.hotwords and not self.lm:
            raise DecodingError(f"hotwords={self.hotwords}: hotwords need beam search with a word LM (--lm lm.arpa)")


def decoding_options(method: str | None = None, lm: str | None = None, lexicon: str | None = None,
                     lm_weight: float | None = None, word_score: float | None = None, **fields) -> DecodingOptions:
    """Validated :class:`DecodingOptions` as ``asr transcribe`` reads its options: beam search when
    an LM or lexicon is given, and an LM's weights as ``asr lm tune`` stored them unless given."""
    unknown = set(fields) - {f.name for f in dataclasses.fields(DecodingOptions)}
    if unknown:
        raise DecodingError(f"{sorted(unknown)[0]}: not a decoding option (those of asr.DecodingOptions)")
    if lm is not None and (lm_weight is None or word_score is None):
        from asr.tuning import params_path, tuned_params

        tuned = tuned_params(lm) or {}
        if tuned:
            log.info("LM weights from %s: %s", params_path(lm), tuned)
        lm_weight = lm_weight if lm_weight is not None else tuned.get("lm_weight")
        word_score = word_score if word_score is not None else tuned.get("word_score")
    defaults = DecodingOptions()
    try:
        method = DecodeMethod(method or ("beam" if (lm or lexicon) else "greedy"))
    except ValueError:
        raise DecodingError(f"method={method!r}: greedy or beam") from None
    options = DecodingOptions(method=method, lm=lm, lexicon=lexicon,
                              lm_weight=defaults.lm_weight if lm_weight is None else lm_weight,
                              word_score=defaults.word_score if word_score is None else word_score, **fields)
    options.validate()
    return options


Decoder = Callable[[torch.Tensor, torch.Tensor], list[list[Hypothesis]]]


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
    """Best-path CTC decoding.

    Args:
        log_probs: (B, T, V) log-probabilities.
        lengths: (B,) valid frames per row.

    Returns:
        One :class:`Hypothesis` per row: the argmax path with repeats merged and blanks removed.
    """
    best_scores, best = log_probs.max(dim=-1)  # (B, T)
    if best.is_cuda:  # one copy to the host (ids are exact in float32) instead of a wait per result below
        both = torch.stack([best.to(best_scores.dtype), best_scores]).cpu()
        best, best_scores = both[0].long(), both[1]
    batch, frames = best.shape
    positions = torch.arange(frames)
    valid = positions.unsqueeze(0) < lengths.cpu().unsqueeze(1)  # (B, T)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=BLANK_ID)
    keep = valid & (best != BLANK_ID) & (best != previous)
    scores = (best_scores * valid).sum(dim=1).tolist()
    rows, cols = keep.nonzero(as_tuple=True)
    tokens = best[rows, cols].tolist()
    counts = keep.sum(dim=1).tolist()
    cols_list = cols.tolist()
    hyps, start = [], 0
    for row in range(batch):
        end = start + counts[row]
        hyps.append(Hypothesis(tuple(tokens[start:end]), tuple(cols_list[start:end]), scores[row]))
        start = end
    return hyps


class BeamSearchDecoder:
    """CTC prefix beam search over (B, T, V) log-probabilities, with an optional LM.

    With ``lexicon`` (or a word LM, whose words become the lexicon) only lexicon words are
    produced and ``lm_weight``/``word_score`` apply per word; without, decoding is lexicon-free
    over the model's tokens and a token-level ``token_lm`` may be fused.
    """

    def __init__(self, tokenizer: Tokenizer, options: DecodingOptions, token_lm: object | None = None,
                 loaded_lm: object | None = None, hotwords: dict[str, float] | None = None):
        """``loaded_lm``: the LM of another decoder of ``options.lm`` (:meth:`with_weights`), not loaded
        again. ``hotwords``: {word: boost} (default: ``options.hotwords``' file), :mod:`asr.hotwords`."""
        from torchaudio.models.decoder import ctc_decoder

        options.validate()
        self.tokenizer, self.options = tokenizer, options
        if hotwords is None:
            hotwords = read_hotwords(options.hotwords) if options.hotwords else {}
        self.hotwords = hotwords
        if hotwords and options.token_min_logp is not None:
            # a name the model has not learnt to spell runs through tokens it finds unlikely:
            # pruning them would leave the hotword unreachable whatever its boost
            self.options = options = dataclasses.replace(options, token_min_logp=None)
        self.vocab_size = tokenizer.vocab_size
        symbols = decoder_symbols(tokenizer)
        self.boundary_id = symbols.index(WORD_BOUNDARY) if WORD_BOUNDARY in symbols else None
        if self.boundary_id is None:
            # flashlight needs a silence token; one past the model's outputs is never emitted
            symbols = symbols + [WORD_BOUNDARY]
        kenlm = options.lm
        if options.lm is not None and token_lm is None and self._is_char_lm(options.lm):
            token_lm, kenlm = loaded_lm if loaded_lm is not None else self._char_lm(options.lm), None
        if self.hotwords and (kenlm is None or options.lexicon is not None):
            raise DecodingError("hotwords need beam search with a word LM (--lm lm.arpa) and no --lexicon")
        lm = loaded_lm if loaded_lm is not None else kenlm if kenlm is not None else token_lm
        with tempfile.TemporaryDirectory() as tmp, _native_output_to_log():
            lexicon = self._lexicon(kenlm, Path(tmp) / "lexicon.txt")
            if self.hotwords:
                lm = hotword_lm(kenlm, lexicon, self.hotwords, UNK_WORD)
            self.uses_lexicon = lexicon is not None
            self.closes_last_word = self.uses_lexicon and self.boundary_id is not None
            try:
                self.decoder = ctc_decoder(
                    lexicon=lexicon,
                    tokens=symbols,
                    lm=lm,
                    beam_size=options.beam_size,
                    beam_size_token=options.beam_size_token,
                    beam_threshold=options.beam_threshold,
                    lm_weight=options.lm_weight if (kenlm or token_lm is not None) else 0.0,
                    word_score=options.word_score,
                    log_add=options.log_add,
                    blank_token=BLANK_ALIAS,
                    sil_token=WORD_BOUNDARY,
                    unk_word=UNK_WORD,
                )
            except (RuntimeError, ValueError) as exc:
                raise DecodingError(f"{options.lm or options.lexicon}: cannot load ({str(exc).splitlines()[0]})") from None
        self._flashlight, self._word_dict = self.decoder.decoder, self.decoder.word_dict

    def with_weights(self, lm_weight: float, word_score: float) -> BeamSearchDecoder:
        """This decoder with another LM weight and word score, sharing the loaded LM (LM tuning
        builds one per grid point)."""
        options = dataclasses.replace(self.options, lm_weight=lm_weight, word_score=word_score)
        other = BeamSearchDecoder(self.tokenizer, options, loaded_lm=self.decoder.lm if self.options.lm else None,
                                  hotwords=self.hotwords)
        if hasattr(self, "_lm_model"):
            other._lm_model = self._lm_model  # the character LM stays alive with every decoder using it
        return other

    @staticmethod
    def _is_char_lm(path: str) -> bool:
        from asr.charlm import is_charlm

        return is_charlm(path)

    def _char_lm(self, path: str) -> object:
        from asr.charlm import fusion_lm, load_charlm

        lm_model, lm_tokenizer = load_charlm(path)
        if decoder_symbols(lm_tokenizer) != decoder_symbols(self.tokenizer):
            raise DecodingError(f"{path}: the character LM was trained with another tokenizer")
        self._lm_model = lm_model  # kept alive as long as the decoder
        return fusion_lm(lm_model)

    def _lexicon(self, kenlm: str | None, path: Path) -> str | None:
        """The lexicon file for flashlight: the user's words, else a word LM's words, else none."""
        if self.options.lexicon is not None:
            # respelled with the model's tokens; a word it cannot spell is an error
            write_lexicon(read_lexicon_words(self.options.lexicon), self.tokenizer, path, skip_unspellable=False)
            return str(path)
        if kenlm is not None:
            for word in self.hotwords:  # a hotword the model cannot spell is an error, naming it
                spell(word, self.tokenizer)
            words = list(arpa_words(kenlm))
            known = set(words)
            words += [w for w in self.hotwords if w not in known]
            count, skipped = write_lexicon(words, self.tokenizer, path, skip_unspellable=True)
            if kenlm not in _REPORTED_LEXICONS:
                _REPORTED_LEXICONS.add(kenlm)
                log.info("lexicon: %d words from %s", count, kenlm)
                if skipped:
                    log.warning("%s: %d LM words cannot be spelled with the model's tokens and are left out of the "
                                "lexicon, e.g. %s", kenlm, len(skipped), ", ".join(map(repr, skipped[:5])))
            return str(path)
        return None

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[Hypothesis]]:
        """(B, T, V) log-probabilities and (B,) lengths → the n-best hypotheses of each row."""
        # numpy, not torch, from here on: per utterance the search itself takes a fraction of a
        # millisecond, and torch's per-call overhead would double it
        emissions = log_probs.detach().float().cpu().numpy()
        return [self._decode_row(emissions[row, :length]) for row, length in enumerate(lengths.tolist())]

    def _decode_row(self, emissions: np.ndarray) -> list[Hypothesis]:
        """(T, V) log-probabilities of one utterance → its n-best hypotheses."""
        kept = self._kept_frames(emissions)  # (T',) model frame of each searched frame
        matrix = self._decoder_input(emissions[kept])
        # flashlight's own decoder (the one torchaudio's CTCDecoder wraps), called directly: the
        # wrapper converts every finalist to tensors. (Its get_best_hypothesis is for partial
        # results: after decode_end it returns a truncated path.)
        results = self._flashlight.decode(matrix.ctypes.data, matrix.shape[0], matrix.shape[1])
        finalists = results if self.options.nbest > 1 else results[:1]
        frames = kept.tolist()
        return self._distinct([self._hypothesis(r, frames) for r in finalists])

    def _kept_frames(self, emissions: np.ndarray) -> np.ndarray:
        """Indices of the frames the search visits. Within a run of frames where the blank is
        near certain only the first is kept: the others hardly change the ranking of labellings
        (each adds about 0 to every path through a blank), while each costs as much search as a
        speech frame. One blank frame stays, so a repeated token ("l l") stays separable."""
        if self.options.blank_skip is None:
            return np.arange(emissions.shape[0])
        certain = emissions[:, BLANK_ID] > math.log(self.options.blank_skip)  # (T,)
        keep = ~certain
        keep[1:] |= ~certain[:-1]
        return np.flatnonzero(keep)

    def _decoder_input(self, emissions: np.ndarray) -> np.ndarray:
        """(T, V) -> the C-contiguous float32 (T [+ 1], V [+ 1]) matrix flashlight reads."""
        frames, vocab = emissions.shape
        # the added silence column (models without a space token): flashlight reads it for
        # hypotheses between words, so it must exist (past the row it would read the next
        # frame's blank) and be impossible
        width = vocab + (self.boundary_id is None)
        # with a lexicon, one frame after the end where the word boundary is certain: lexicon
        # words end with one, and our models emit none after the last word
        matrix = np.full((frames + self.closes_last_word, width), IMPOSSIBLE, dtype=np.float32)
        matrix[:frames, :vocab] = emissions
        if self.options.token_min_logp is not None and frames:
            # flashlight tries a fixed number of tokens per frame; an impossible score keeps the
            # unlikely ones from starting hypotheses that the beam would carry along
            block = matrix[:frames, :vocab]
            block[(block < self.options.token_min_logp) & (block < block.max(axis=1, keepdims=True))] = IMPOSSIBLE
        if self.closes_last_word:
            matrix[frames, self.boundary_id] = 0.0
        return matrix

    def _distinct(self, hyps: list[Hypothesis]) -> list[Hypothesis]:
        """The ``nbest`` best hypotheses with distinct tokens (flashlight can finish the same
        labelling in several decoder states; the best-scoring one is kept)."""
        seen: set[tuple[int, ...]] = set()
        kept = []
        for hyp in hyps:
            if hyp.tokens not in seen:
                seen.add(hyp.tokens)
                kept.append(hyp)
        return kept[: self.options.nbest]

    def _hypothesis(self, result, kept: list[int]) -> Hypothesis:
        """A flashlight DecodeResult (its token path has one padding step before the first
        frame) → a :class:`Hypothesis` with frames numbered as in the model output."""
        if self.uses_lexicon:
            # flashlight's token path can lose one letter of a doubled pair inside a lexicon word;
            # its word sequence is authoritative, so the tokens are respelled from the words
            # (frames are then unknown: word times come from forced alignment anyway)
            words = [self._word_dict.get_entry(w) for w in result.words if w >= 0]
            return Hypothesis(tuple(self.tokenizer.encode(" ".join(words))), (), float(result.score))
        path = list(result.tokens)[1 : len(kept) + 1]  # one token per decoded frame
        emitted = [
            (token, kept[step])
            for step, token in enumerate(path)
            # a token is emitted where its run starts; the added silence token is not output
            if token != BLANK_ID and token < self.vocab_size and (step == 0 or token != path[step - 1])
        ]
        while emitted and self._is_boundary(emitted[0][0]):
            emitted.pop(0)
        while emitted and self._is_boundary(emitted[-1][0]):
            emitted.pop()
        return Hypothesis(tuple(t for t, _ in emitted), tuple(f for _, f in emitted), float(result.score))

    def _is_boundary(self, token: int) -> bool:
        return isinstance(self.tokenizer, CharTokenizer) and self.tokenizer.symbols[token] == " "


class CudaBeamSearchDecoder:
    """torchaudio's CUDA CTC beam search (no LM, no lexicon): the whole batch decodes on the GPU.
    It reports no emission frames; word times come from forced alignment as for any decoder."""

    def __init__(self, tokenizer: Tokenizer, options: DecodingOptions):
        from torchaudio.models.decoder import cuda_ctc_decoder

        options.validate()
        self.options = options
        self.decoder = cuda_ctc_decoder(decoder_symbols(tokenizer), nbest=options.nbest, beam_size=options.beam_size)

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[Hypothesis]]:
        results = self.decoder(log_probs.float().contiguous(), lengths.to(log_probs.device, torch.int32))
        # torchaudio 2.11 gives each hypothesis's tokens as a tensor: plain ints for the tokenizers
        return [[Hypothesis(tuple(torch.as_tensor(h.tokens).tolist()), (), float(h.score)) for h in row] for row in results]


def build_decoder(
    tokenizer: Tokenizer, options: DecodingOptions, token_lm: object | None = None, device: str | torch.device = "cpu"
) -> Decoder:
    """A function from ((B, T, V) log-probs, (B,) lengths) to n-best hypothesis lists. Beam search
    without LM or lexicon runs on the GPU when ``device`` is CUDA, on the CPU otherwise."""
    options.validate()
    if DecodeMethod(options.method) is DecodeMethod.greedy:
        return lambda log_probs, lengths: [[h] for h in greedy_decode(log_probs, lengths)]
    if torch.device(device).type == "cuda" and options.lm is None and options.lexicon is None and token_lm is None:
        return CudaBeamSearchDecoder(tokenizer, options)
    return BeamSearchDecoder(tokenizer, options, token_lm)


@contextmanager
def _native_output_to_log() -> Iterator[None]:
    """Keep what C++ libraries print while an LM loads (KenLM's "Loading the LM will be faster if
    you build a binary file" and its progress bar) out of the user's terminal: file descriptors 1
    and 2 point at a temporary file meanwhile, and what was printed is logged at debug level."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            printed = sink.read().decode(errors="replace").strip()
            if printed:
                log.debug("printed while loading the decoder: %s", printed)
