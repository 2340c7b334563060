"""Word n-gram language models: an interpolated modified Kneser-Ney estimator writing ARPA.

The estimate follows KenLM's ``lmplz`` (Heafield et al., 2013) so that the same text gives the
same model: adjusted counts (continuation counts below the top order, raw counts for n-grams
that start with ``<s>``), three discounts per order from counts-of-counts (Chen & Goodman),
interpolation down to a uniform distribution over the vocabulary (``<unk>`` included, ``<s>``
excluded). ``<unk>`` therefore gets only the uniform mass. Probabilities are written as log10.

The text is normalized with the model's declared :class:`~asr.tokenizer.TextNormalization`
before counting, so LM words match what the acoustic model spells.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from asr.atomic import atomic_write
from asr.errors import DecodingError

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback
Ngram = tuple[str, ...]


@dataclass(frozen=True)
class NgramModel:
    """log10 probabilities and backoffs per n-gram, all orders in one map each."""

    order: int
    log_probs: dict[Ngram, float]
    log_backoffs: dict[Ngram, float]

    def log10_prob(self, word: str, context: Ngram) -> float:
        """log10 p(word | context), backing off as an ARPA reader does."""
        context = context[-(self.order - 1):] if self.order > 1 else ()
        penalty = 0.0
        while True:
            ngram = context + (word,)
            if ngram in self.log_probs:
                return penalty + self.log_probs[ngram]
            if not context:
                return penalty + self.log_probs[(UNK,)]
            penalty += self.log_backoffs.get(context, 0.0)
            context = context[1:]


def count_ngrams(sentences: Iterable[list[str]], order: int) -> dict[Ngram, int]:
    counts: dict[Ngram, int] = defaultdict(int)
    for words in sentences:
        padded = [BOS] + words + [EOS]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                counts[tuple(padded[i: i + n])] += 1
    return counts


def adjusted_counts(counts: dict[Ngram, int], order: int) -> dict[Ngram, int]:
    """Top order and ``<s>``-initial n-grams keep raw counts; others count distinct left words."""
    adjusted: dict[Ngram, int] = {}
    for ngram, count in counts.items():
        if len(ngram) == order or ngram[0] == BOS:
            adjusted[ngram] = count
    for ngram in counts:
        if len(ngram) > 1:
            suffix = ngram[1:]
            if suffix[0] != BOS:
                adjusted[suffix] = adjusted.get(suffix, 0) + 1  # one more distinct left word
    return adjusted


def discounts(adjusted: dict[Ngram, int], order: int) -> dict[int, tuple[float, float, float]]:
    """Per order n: (D1, D2, D3+) from the counts of adjusted counts 1..4."""
    result = {}
    for n in range(1, order + 1):
        t = [0] * 5
        for ngram, count in adjusted.items():
            if len(ngram) == n and count <= 4 and ngram != (BOS,):
                t[count] += 1
        try:
            y = t[1] / (t[1] + 2 * t[2])
            ds = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
            if not all(0 < d < k for d, k in zip(ds, (1, 2, 3))):
                raise ZeroDivisionError
        except ZeroDivisionError:
            log.warning("order %d: too little text for modified Kneser-Ney discounts; using %s", n, FALLBACK_DISCOUNTS)
            ds = FALLBACK_DISCOUNTS
        result[n] = ds
    return result


def estimate(sentences: Iterable[list[str]], order: int) -> NgramModel:
    """Interpolated modified Kneser-Ney estimate of an ``order``-gram model."""
    if order < 1:
        raise DecodingError(f"order={order}: must be at least 1")
    counts = count_ngrams(sentences, order)
    if not counts:
        raise DecodingError("cannot build an LM: the text is empty")
    adjusted = adjusted_counts(counts, order)
    discount = discounts(adjusted, order)
    # per context: total adjusted count and how many continuations have count 1, 2, 3+
    totals: dict[Ngram, int] = defaultdict(int)
    buckets: dict[Ngram, list[int]] = defaultdict(lambda: [0, 0, 0])
    for ngram, count in adjusted.items():
        if ngram == (BOS,):
            continue
        totals[ngram[:-1]] += count
        buckets[ngram[:-1]][min(count, 3) - 1] += 1

    def backoff(context: Ngram) -> float:
        d = discount[len(context) + 1]
        return sum(di * ni for di, ni in zip(d, buckets[context])) / totals[context]

    vocabulary = {ng[0] for ng in adjusted if len(ng) == 1} | {UNK}
    vocabulary.discard(BOS)
    probs: dict[Ngram, float] = {(UNK,): backoff(()) / len(vocabulary)}
    by_order = sorted((ng for ng in adjusted if ng != (BOS,)), key=len)
    for ngram in by_order:
        context = ngram[:-1]
        count = adjusted[ngram]
        d = discount[len(ngram)][min(count, 3) - 1]
        lower = probs[ngram[1:]] if len(ngram) > 1 else 1.0 / len(vocabulary)
        probs[ngram] = (count - d) / totals[context] + backoff(context) * lower
    log_probs = {ng: math.log10(p) for ng, p in probs.items()}
    log_probs[(BOS,)] = 0.0  # as lmplz writes it; <s> is only ever a context
    log_backoffs = {ctx: math.log10(backoff(ctx)) for ctx in totals if ctx}
    return NgramModel(order, log_probs, log_backoffs)


def write_arpa(model: NgramModel, path: str | Path) -> Path:
    """Write ``model`` as an ARPA file atomically."""
    path = Path(path)
    by_order: dict[int, list[Ngram]] = defaultdict(list)
    for ngram in model.log_probs:
        by_order[len(ngram)].append(ngram)
    with atomic_write(path) as f:
        f.write("\n\\data\\\n")
        for n in range(1, model.order + 1):
            f.write(f"ngram {n}={len(by_order[n])}\n")
        for n in range(1, model.order + 1):
            f.write(f"\n\\{n}-grams:\n")
            for ngram in sorted(by_order[n]):
                line = f"{model.log_probs[ngram]:.7g}\t{' '.join(ngram)}"
                if n < model.order:
                    line += f"\t{model.log_backoffs.get(ngram, 0.0):.7g}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    return path


def read_arpa(path: str | Path) -> NgramModel:
    """Read an ARPA file (for tests and tools; decoding loads ARPA through KenLM)."""
    log_probs: dict[Ngram, float] = {}
    log_backoffs: dict[Ngram, float] = {}
    order, current = 0, 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line in ("\\data\\", "\\end\\") or line.startswith("ngram "):
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                current = int(line[1:-7])
                order = max(order, current)
                continue
            parts = line.split()
            if current == 0 or len(parts) < current + 1:
                raise DecodingError(f"{path}:{number}: malformed ARPA line")
            ngram = tuple(parts[1: current + 1])
            log_probs[ngram] = float(parts[0])
            if len(parts) > current + 1:
                log_backoffs[ngram] = float(parts[current + 1])
    if not log_probs:
        raise DecodingError(f"{path}: no n-grams found; not an ARPA file")
    return NgramModel(order, log_probs, log_backoffs)


def build_arpa(texts: Iterable[str], order: int, path: str | Path, normalize=None) -> Path:
    """Normalize ``texts``, estimate a modified Kneser-Ney ``order``-gram model, write ARPA."""
    sentences = []
    for text in texts:
        text = normalize(text) if normalize is not None else text
        if text.strip():
            sentences.append(text.split())
    model = estimate(sentences, order)
    sizes = ", ".join(f"{n}-grams {sum(1 for g in model.log_probs if len(g) == n)}" for n in range(1, order + 1))
    log.info("LM: %d sentences, %s", len(sentences), sizes)
    return write_arpa(model, path)


def read_lm_text(path: str | Path) -> list[str]:
    """Sentences from a text file (one per line) or a JSON-lines manifest (its ``text`` fields)."""
    path = Path(path)
    if not path.is_file():
        raise DecodingError(f"{path}: LM text not found")
    if path.suffix in (".jsonl", ".json"):
        from asr.data import read_manifest

        return [u.text for u in read_manifest(path, check_files=False)]
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DecodingError(f"{path}: LM text is not UTF-8") from None
