"""The modified Kneser-Ney ARPA writer: known probabilities, proper distributions, KenLM loads it."""

from __future__ import annotations

import json
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


# ---- binary KenLM models ------------------------------------------------------------------------

# A bigram LM of the yes/no training texts (from 'asr lm build --order 2'), and the binary files
# KenLM's build_binary (commit 4cb443e, x86-64) made of it: `build_binary yesno.arpa yesno.probing`
# and `build_binary trie yesno.arpa yesno.trie`. No package here ships build_binary (Debian has no
# kenlm, the kenlm wheel cannot write binaries), so the files are kept here rather than made per run.
YESNO_ARPA = """\\data\\
ngram 1=5
ngram 2=7

\\1-grams:
-0.5720968\t</s>\t0
0\t<s>\t-0.7269987
-0.90309\t<unk>\t0
-0.4694344\tno\t-0.9595713
-0.5720968\tyes\t-0.7085153

\\2-grams:
-0.05743835\t<s> no
-1.043954\tno </s>
-0.290011\tno no
-0.416736\tno yes
-0.7928978\tyes </s>
-0.2815783\tyes no
-0.5353059\tyes yes

\\end\\
"""
YESNO_BINARIES = {
    "probing": """
bW1hcCBsbSBodHRwOi8va2hlYWZpZWxkLmNvbS9jb2RlIGZvcm1hdCB2ZXJzaW9uIDUKAAAAAAAAAAAAAACAPwAAAL8BAAAA////
/wAAAAABAAAAAAAAAAIAAAAAAMA/AAAAAAEAAAAAAAAABQAAAAAAAAAHAAAAAAAAAAAAAAAAAAAABQAAAHB+Ib05hnUAAgAAAPyl
Mpsl2TO0AwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAps9/F9c+BrAQAAAAAAAAAAAAAAAAAAAO1ybPxVp5E4BAAAAOgwZ78A
AACA8HQSPwAAAIAAAAAAlhw6v7VZ8D53pnW/8HQSP0JhNb8AAAAAAAAAAAjyAmiEsTMTbF7VvgAAAAAAAAAAAAAAAAAAAAAAAAAA
AAAAAJnR7r47msadSaCFv5o7AtZvDdecekRrvZPEpjcR34+UUnyUvqaYk50pJC+lWvtKv6yN2xQDYWasCCuQvje7f0uWD9orzwkJ
vwAAAAAAAAAAAAAAADx1bms+ADwvcz4APHM+AG5vAHllcwA=""",
    "trie": """
bW1hcCBsbSBodHRwOi8va2hlYWZpZWxkLmNvbS9jb2RlIGZvcm1hdCB2ZXJzaW9uIDUKAAAAAAAAAAAAAACAPwAAAL8BAAAA////
/wAAAAABAAAAAAAAAAIAAAAAAMA/AgAAAAEAAAABAAAABQAAAAAAAAAHAAAAAAAAAAAAAAAEAAAAAAAAAHB+Ib05hnUA7XJs/FWn
kTgKbPfxfXPga/ylMpsl2TO0AAAAAAAAAADoMGe/AAAAgAAAAAAAAAAAAAAAAJYcOr8AAAAAAAAAAPB0Er9CYTW/AAAAAAAAAADw
dBK/AAAAgAIAAAAAAAAAtVnwvnemdb8EAAAAAAAAAAAAAAAAAAAABwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAek5I+JHNq9onrX2l
H5NAC3/RI1rrCWEF0kcpPkofAAAAAAAAAAAAAAAAPHVuaz4APHM+AHllcwA8L3M+AG5vAA==""",
}


@pytest.fixture
def yesno_lms(tmp_path) -> dict[str, Path]:
    """The ARPA, its two binary forms and a lexicon of its words."""
    import base64

    paths = {"arpa": tmp_path / "yesno.arpa", "lexicon": tmp_path / "lexicon.txt"}
    paths["arpa"].write_text(YESNO_ARPA)
    paths["lexicon"].write_text("yes\nno\n")
    for kind, text in YESNO_BINARIES.items():
        paths[kind] = tmp_path / f"yesno.{kind}"
        paths[kind].write_bytes(base64.b64decode("".join(text.split())))
        assert paths[kind].read_bytes().startswith(b"mmap lm http://kheafield.com/code format version 5\n")
    return paths


def test_a_binary_kenlm_without_a_lexicon_is_one_clear_error(trained_tiny, yesno_lms):
    """Its words cannot be read from a binary file: every command that decodes says so in one
    line naming the file and the way out, before any decoding."""
    from conftest import run_cli

    model_path, manifest, _ = trained_tiny
    audio = json.loads(manifest.read_text().splitlines()[0])["audio_filepath"]
    for kind in ("probing", "trie"):
        lm = str(yesno_lms[kind])
        for args in (["transcribe", str(model_path), audio], ["evaluate", str(model_path), str(manifest)]):
            done = run_cli(*args, "--lm", lm)
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            errors = [line for line in done.stderr.splitlines() if line.startswith("asr: error:")]
            assert errors == [f"asr: error: {lm}: not a text ARPA file; pass --lexicon with a binary KenLM model"]
            assert done.stdout == ""


def test_a_binary_kenlm_with_a_lexicon_decodes_exactly_as_its_arpa(trained_tiny, yesno_lms):
    """The same LM as ARPA (lexicon: its words) and as probing or trie binary (lexicon given):
    the same texts and the same scores, which the LM changes (it is really used); tuning too."""
    from asr.decoding import DecodeMethod, DecodingOptions
    from asr.transcribe import Recognizer
    from asr.tuning import tune_lm

    model_path, manifest, rates = trained_tiny
    paths = [u.key for u in rates.utterances]
    lexicon = str(yesno_lms["lexicon"])

    def decode(**options):
        recognizer = Recognizer.load(model_path, "cpu", DecodingOptions(method=DecodeMethod.beam, lm_weight=2.0,
                                                                         word_score=-1.0, **options))
        return [(t.text, t.score) for t in recognizer.transcribe(paths)]

    arpa = decode(lm=str(yesno_lms["arpa"]))
    without_lm = decode(lexicon=lexicon)
    assert [text for text, _ in arpa] == [u.reference for u in rates.utterances]  # the trained words
    for kind in ("probing", "trie"):
        binary = decode(lm=str(yesno_lms[kind]), lexicon=lexicon)
        assert [text for text, _ in binary] == [text for text, _ in arpa], kind
        assert [score for _, score in binary] == pytest.approx([score for _, score in arpa], abs=1e-3), kind
    # the LM moves every score (weight 2 on 9 word transitions of log10 probability < 0)
    assert all(abs(a - b) > 0.5 for (_, a), (_, b) in zip(arpa, without_lm)), (arpa, without_lm)

    recognizer = Recognizer.load(model_path, "cpu")
    grid = dict(lm_weights=[0.0, 2.0], word_scores=[-1.0, 0.0])
    from_arpa = tune_lm(recognizer, manifest, yesno_lms["arpa"], **grid)
    from_binary = tune_lm(recognizer, manifest, yesno_lms["probing"], **grid,
                          options=DecodingOptions(method=DecodeMethod.beam, lexicon=lexicon))
    assert from_binary == from_arpa


def test_lm_tune_takes_a_binary_kenlm_with_its_lexicon(trained_tiny, yesno_lms):
    """What the error above asks for works in every command that takes --lm, tuning included."""
    from conftest import run_cli

    model_path, manifest, _ = trained_tiny
    tuned = {}
    for kind, lexicon in (("arpa", []), ("probing", ["--lexicon", str(yesno_lms["lexicon"])])):
        done = run_cli("lm", "tune", str(model_path), str(manifest), "--lm", str(yesno_lms[kind]), *lexicon,
                       "--lm-weights", "0,2", "--word-scores=-1,0")
        assert done.returncode == 0, done.stderr
        tuned[kind] = json.loads(Path(f"{yesno_lms[kind]}.params.json").read_text())
    assert tuned["probing"] == tuned["arpa"] and tuned["probing"]["wer"] <= 5.0
    # and decoding with the binary LM takes the weights tuned for it
    done = run_cli("evaluate", str(model_path), str(manifest), "--lm", str(yesno_lms["probing"]),
                   "--lexicon", str(yesno_lms["lexicon"]))
    assert done.returncode == 0, done.stderr
    assert "yesno.probing.params.json" in done.stderr
    assert float(done.stdout.splitlines()[-1].split()[1]) == pytest.approx(tuned["probing"]["wer"], abs=1e-6)
