"""Hotwords (context biasing): words the beam search should favour, such as names the LM never saw.

A hotword joins the lexicon (spelled with the model's tokens), so beam search can produce it even
outside the LM's vocabulary, and the word LM is wrapped (:func:`hotword_lm`) to add the word's
boost to its LM score: a word the LM knows gets its n-gram score plus the boost, one it does not
know the score of a rare word (``UNSEEN_WORD_LOG10``) plus the boost, instead of ``<unk>``'s;
either way at most 0 (log10 of 1), so a hotword is made likely where the audio suggests it but
is never a reward to insert. Beam search with hotwords does not prune unlikely tokens
(``token_min_logp``): a name the model cannot spell well runs through them. Hotwords come as
``{word: boost}``; from a file, one ``word [boost]`` a line (:func:`read_hotwords`).
"""

from __future__ import annotations

from pathlib import Path

from asr.errors import DecodingError

DEFAULT_BOOST = 5.0  # in log10 LM units, scaled by the LM weight like every LM score
UNSEEN_WORD_LOG10 = -5.0  # the LM score a hotword outside the LM starts from (a rare word's)
MAX_HOTWORDS = 1000


def read_hotwords(path: str | Path) -> dict[str, float]:
    """``word [boost]`` per line (``#`` comments and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DecodingError(f"{path}: hotwords file not found")
    return parse_hotwords_text(path.read_text(encoding="utf-8", errors="replace"), str(path))


def parse_hotwords_text(text: str, source: str = "hotwords") -> dict[str, float]:
    """The file format as text (a file, a form field): ``word [boost]`` lines, ``#`` comments."""
    return parse_hotwords([line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")],
                          source)


def parse_hotwords(items: list[str] | dict, source: str = "hotwords") -> dict[str, float]:
    """``["word", "word 3.5", ...]`` or ``{"word": 3.5}`` -> ``{word: boost}``, checked."""
    pairs = list(items.items()) if isinstance(items, dict) else [_split(line, source) for line in items]
    if len(pairs) > MAX_HOTWORDS:
        raise DecodingError(f"{source}: {len(pairs)} hotwords; at most {MAX_HOTWORDS}")
    hotwords = {}
    for word, boost in pairs:
        if not isinstance(word, str) or not word.strip() or len(word.split()) != 1:
            raise DecodingError(f"{source}: {word!r} is not one word")
        if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not 0 < boost <= 100:
            raise DecodingError(f"{source}: boost of {word!r} is {boost!r}; a number in (0, 100]")
        hotwords[word.strip()] = float(boost)
    return hotwords


def _split(line: str, source: str) -> tuple[str, float]:
    fields = str(line).split()
    if len(fields) not in (1, 2):
        raise DecodingError(f"{source}: {line!r}: expected 'word' or 'word boost'")
    try:
        return fields[0], float(fields[1]) if len(fields) == 2 else DEFAULT_BOOST
    except ValueError:
        raise DecodingError(f"{source}: {line!r}: the boost must be a number") from None


def hotword_lm(kenlm_path: str, lexicon_path: str, boosts: dict[str, float], unk_word: str) -> object:
    """A flashlight LM: the KenLM at ``kenlm_path`` over the words of ``lexicon_path`` (indexed as
    torchaudio's ``ctc_decoder`` indexes them), with ``boosts`` added to the hotwords' scores."""
    from torchaudio.models.decoder import CTCDecoderLM
    from torchaudio.models.decoder._ctc_decoder import _create_word_dict, _KenLM, _load_words

    word_dict = _create_word_dict(_load_words(lexicon_path))
    kenlm = _KenLM(kenlm_path, word_dict)
    unk = word_dict.get_index(unk_word) if word_dict.contains(unk_word) else -1
    by_index = {word_dict.get_index(w): b for w, b in boosts.items() if word_dict.contains(w)}

    class HotwordLM(CTCDecoderLM):
        def start(self, start_with_nothing: bool):
            return kenlm.start(start_with_nothing)

        def score(self, state, word: int):
            next_state, score = kenlm.score(state, word)
            boost = by_index.get(word)
            if boost is not None and word != unk:
                score = min(0.0, max(score, UNSEEN_WORD_LOG10) + boost)
            return next_state, score

        def finish(self, state):
            return kenlm.finish(state)

    return HotwordLM()
