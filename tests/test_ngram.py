"""The modified Kneser-Ney ARPA writer: known probabilities, proper distributions, KenLM loads it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from asr.errors import DecodingError
from asr.ngram import build_arpa, estimate, read_arpa
from asr.tokenizer import TextNormalization

LMPLZ_FIXTURE = Path(__file__).parent / "data" / "lmplz"


def test_unigram_probabilities_by_hand(tmp_path):
    # <s> a a b </s>: counts a 2, b 1, </s> 1; too few counts for Chen-Goodman discounts, so the
    # fallback (0.5, 1, 1.5); backoff mass (0.5*2 + 1*1)/4 = 0.5 spread over 4 words (<unk> included)
    model = read_arpa(build_arpa(["a a b"], 1, tmp_path / "lm.arpa"))
    expected = {"a": 0.375, "b": 0.25, "</s>": 0.25, "<unk>": 0.125}
    for word, p in expected.items():
        assert model.log_probs[(word,)] == pytest.approx(math.log10(p), abs=1e-6)
    assert model.log_probs[("<s>",)] == 0.0  # as lmplz writes it


def test_bigram_probability_and_backoff_by_hand(tmp_path):
    model = read_arpa(build_arpa(["a b"], 2, tmp_path / "lm.arpa"))
    unigram = 0.5 / 3 + 0.5 / 4  # continuation count 1 of 3, discounted by 0.5, plus uniform backoff
    assert model.log_probs[("a",)] == pytest.approx(math.log10(unigram), abs=1e-6)
    assert model.log_backoffs[("a",)] == pytest.approx(math.log10(0.5), abs=1e-6)
    assert model.log_probs[("a", "b")] == pytest.approx(math.log10(0.5 + 0.5 * unigram), abs=1e-6)
    # an unseen bigram backs off: p(a | b) = backoff(b) * p(a)
    assert model.log10_prob("a", ("b",)) == pytest.approx(math.log10(0.5 * unigram), abs=1e-6)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_proper_distribution(order):
    text = ["the cat sat on the mat", "the dog sat", "a cat and a dog", "on the mat the cat sat"] * 3 + ["the end"]
    model = estimate([t.split() for t in text], order)
    vocabulary = sorted({w for t in text for w in t.split()} | {"</s>", "<unk>"})
    for context in [(), ("<s>",), ("the",), ("the", "cat"), ("<s>", "the", "cat"), ("zebra",), ("sat", "on")]:
        total = sum(10 ** model.log10_prob(w, context) for w in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_text_is_normalized_like_the_model(tmp_path):
    model = read_arpa(build_arpa(["Hello, World!", "hello world"], 2, tmp_path / "lm.arpa", TextNormalization()))
    assert ("hello", "world") in model.log_probs and ("Hello,",) not in model.log_probs


def test_kenlm_loads_the_arpa_and_agrees(tmp_path):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict

    text = ["one two three", "two three four", "one two", "three four one two"]
    arpa = build_arpa(text, 3, tmp_path / "lm.arpa")
    ours = read_arpa(arpa)
    words = create_word_dict({w: [[w]] for w in ["one", "two", "three", "four", "<unk>"]})
    kenlm = KenLM(str(arpa), words)
    state = kenlm.start(False)
    context: tuple[str, ...] = ("<s>",)
    for word in ["one", "two", "three", "four"]:
        state, score = kenlm.score(state, words.get_index(word))
        assert score == pytest.approx(ours.log10_prob(word, context), abs=1e-4)  # KenLM scores are log10
        context += (word,)


@pytest.mark.skipif(not LMPLZ_FIXTURE.is_dir(), reason="lmplz reference files not present")
@pytest.mark.parametrize("order", [2, 3])
def test_matches_kenlm_lmplz_on_the_same_text(order, tmp_path):
    """Reference ARPA files were made once by KenLM's lmplz (see tests/data/lmplz/README)."""
    text = (LMPLZ_FIXTURE / "text.txt").read_text().splitlines()
    ours = read_arpa(build_arpa(text, order, tmp_path / "lm.arpa"))
    reference = read_arpa(LMPLZ_FIXTURE / f"order{order}.arpa")
    assert set(ours.log_probs) == set(reference.log_probs)
    for ngram, value in reference.log_probs.items():
        assert ours.log_probs[ngram] == pytest.approx(value, abs=2e-5), ngram
    for ngram, value in reference.log_backoffs.items():
        assert ours.log_backoffs.get(ngram, 0.0) == pytest.approx(value, abs=2e-5), ngram


def test_empty_text_and_bad_order_are_errors(tmp_path):
    with pytest.raises(DecodingError, match="empty"):
        build_arpa(["", "  "], 3, tmp_path / "lm.arpa")
    with pytest.raises(DecodingError, match="order=0"):
        build_arpa(["a b"], 0, tmp_path / "lm.arpa")
