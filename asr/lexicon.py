"""Lexicons for flashlight's beam search: the model's tokens as decoder symbols, words spelled
with them, and the words of an ARPA LM or a lexicon file."""

from __future__ import annotations

from pathlib import Path

from asr.errors import DecodingError
from asr.tokenizer import BLANK_ID, CharTokenizer, Tokenizer

# flashlight's dictionaries split on whitespace, so the space symbol and the blank get aliases
WORD_BOUNDARY = "|"
BLANK_ALIAS = "<blank>"
UNK_WORD = "<unk>"


def decoder_symbols(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's output symbols as flashlight sees them (index i = model output i)."""
    if isinstance(tokenizer, CharTokenizer):
        symbols = list(tokenizer.symbols)
    else:
        symbols = [BLANK_ALIAS] + [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.sp.get_piece_size())]
    symbols[BLANK_ID] = BLANK_ALIAS
    return [WORD_BOUNDARY if s == " " else s for s in symbols]


def spell(word: str, tokenizer: Tokenizer) -> list[str]:
    """A word's spelling in decoder symbols: its characters, or its pieces (the word boundary
    that ends a lexicon entry is added by :func:`write_lexicon`)."""
    symbols = decoder_symbols(tokenizer)
    if isinstance(tokenizer, CharTokenizer):
        ids = [tokenizer.index.get(ch) for ch in word]
        if None in ids:
            missing = sorted({ch for ch, i in zip(word, ids) if i is None})
            raise DecodingError(f"lexicon word {word!r} has characters outside the model's vocabulary: {missing}")
        return [symbols[i] for i in ids]
    ids = tokenizer.encode(word)
    if tokenizer.sp.unk_id() + 1 in ids:
        raise DecodingError(f"lexicon word {word!r} has characters outside the model's vocabulary")
    return [symbols[i] for i in ids]


def arpa_words(path: str | Path) -> list[str]:
    """The unigram vocabulary of an ARPA file (sentence markers and <unk> excluded)."""
    words, in_unigrams = [], False
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("\\"):
                    if in_unigrams:
                        break
                    in_unigrams = line == "\\1-grams:"
                    continue
                if in_unigrams and line:
                    parts = line.split("\t") if "\t" in line else line.split()
                    if len(parts) < 2:
                        raise DecodingError(f"{path}: malformed unigram line {line!r}")
                    words.append(parts[1])
    except UnicodeDecodeError:
        raise DecodingError(f"{path}: not a text ARPA file; pass --lexicon with a binary KenLM model") from None
    words = [w for w in words if w not in ("<s>", "</s>", UNK_WORD)]
    if not words:
        raise DecodingError(f"{path}: no unigrams found; not an ARPA language model")
    return words


def write_lexicon(words: list[str], tokenizer: Tokenizer, path: str | Path, skip_unspellable: bool) -> tuple[int, list[str]]:
    """Write a flashlight lexicon for ``words``; returns how many words it holds and the words
    left out because the model's tokens cannot spell them (with ``skip_unspellable``)."""
    # A model that outputs a space ends each lexicon word with it, as flashlight expects of its
    # silence token: a word is then emitted only at a space, so the search cannot split one long
    # sound into a word plus a short extra one ("afternoon" -> "afternoon one"). The last word
    # of an utterance is closed by a free space frame that BeamSearchDecoder appends.
    # Sentencepiece models output no space: their pieces mark word starts themselves.
    ending = [WORD_BOUNDARY] if WORD_BOUNDARY in decoder_symbols(tokenizer) else []
    lines, skipped = [], []
    for word in words:
        try:
            lines.append(f"{word}\t{' '.join(spell(word, tokenizer) + ending)}")
        except DecodingError:
            if not skip_unspellable:
                raise
            skipped.append(word)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines), skipped


def read_lexicon_words(path: str | Path) -> list[str]:
    """The words of a lexicon file: the first field of each line. Spellings, if present, are
    ignored: words are always spelled with the model's own tokenizer."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DecodingError(f"{path}: lexicon is not UTF-8 text") from None
    words = [line.split()[0] for line in lines if line.strip()]
    if not words:
        raise DecodingError(f"{path}: the lexicon is empty")
    return words
