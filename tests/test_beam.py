"""Beam search: agreement with greedy, exhaustive search on tiny vocabularies, LM fusion."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import pytest
import torch

from asr.decoding import BeamSearchDecoder, DecodeMethod, DecodingOptions, build_decoder, greedy_decode
from asr.errors import DecodingError
from asr.ngram import build_arpa
from asr.tokenizer import CharTokenizer, TextNormalization

# no pruning at all: for comparisons with exhaustive search
BEAM = DecodingOptions(method=DecodeMethod.beam, beam_size=64, beam_threshold=1000.0, blank_skip=None, token_min_logp=None)


def char_tokenizer(symbols: str) -> CharTokenizer:
    return CharTokenizer(sorted(symbols), TextNormalization())


def random_log_probs(seed: int, batch: int, frames: int, vocab: int, sharpness: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (sharpness * torch.randn(batch, frames, vocab, generator=g)).log_softmax(-1)


def test_beam_of_one_without_lm_equals_greedy():
    tokenizer = char_tokenizer("ab c")
    lp = random_log_probs(0, 6, 40, tokenizer.vocab_size)
    lengths = torch.tensor([40, 33, 1, 20, 40, 7])
    beam = build_decoder(tokenizer, DecodingOptions(method=DecodeMethod.beam, beam_size=1, log_add=False))
    for nbest, greedy in zip(beam(lp, lengths), greedy_decode(lp, lengths)):
        assert tokenizer.decode(nbest[0].tokens).strip() == tokenizer.decode(greedy.tokens).strip()


def ctc_log_likelihood(log_probs: torch.Tensor, labels: tuple[int, ...]) -> float:
    """log p(labels | x): the sum over all CTC alignments (torch's CTC loss, negated)."""
    if not labels:
        return float(log_probs[:, 0].sum())
    loss = torch.nn.functional.ctc_loss(
        log_probs.unsqueeze(1), torch.tensor([labels]), torch.tensor([log_probs.shape[0]]),
        torch.tensor([len(labels)]), reduction="sum",
    )
    return -float(loss)


@pytest.mark.parametrize("seed", range(6))
def test_best_beam_hypothesis_is_the_most_probable_labelling(seed):
    """On a 2-letter vocabulary, compare with an exhaustive search over every label sequence."""
    tokenizer = char_tokenizer("ab")
    frames = 5
    lp = random_log_probs(seed, 1, frames, tokenizer.vocab_size, sharpness=1.0)[0]
    labellings = [seq for n in range(frames + 1) for seq in itertools.product((1, 2), repeat=n)]
    scored = sorted(((ctc_log_likelihood(lp, seq), seq) for seq in labellings), reverse=True)
    best_score, best = scored[0]
    beam = BeamSearchDecoder(tokenizer, BEAM)(lp.unsqueeze(0), torch.tensor([frames]))[0][0]
    assert beam.tokens == best, (scored[:3], beam)


def ambiguous_emissions(tokenizer: CharTokenizer, frames: list[dict[str, float]]) -> torch.Tensor:
    """(1, T, V) log-probabilities from per-frame {symbol: probability}; the rest goes to blank."""
    lp = torch.full((1, len(frames), tokenizer.vocab_size), 1e-6)
    for t, probs in enumerate(frames):
        for symbol, p in probs.items():
            lp[0, t, tokenizer.index[symbol]] = p
        lp[0, t, 0] = max(1e-6, 1.0 - sum(probs.values()))
    return (lp / lp.sum(-1, keepdim=True)).log()


def test_word_lm_moves_the_result_towards_likely_words(tmp_path):
    tokenizer = char_tokenizer("abcd ")
    # "a b" then a second word that is acoustically "ab" (0.55) over "ac" (0.45)
    frames = [{"a": 0.9}, {" ": 0.9}, {"a": 0.9}, {"b": 0.55, "c": 0.45}, {}]
    lp = ambiguous_emissions(tokenizer, frames)
    lengths = torch.tensor([len(frames)])
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("a a |\nab a b |\nac a c |\n")
    no_lm = BeamSearchDecoder(tokenizer, DecodingOptions(method=DecodeMethod.beam, lexicon=str(lexicon)))
    assert tokenizer.decode(no_lm(lp, lengths)[0][0].tokens).strip() == "a ab"
    arpa = build_arpa(["a ac"] * 20 + ["a ab"] + ["ab ab"] * 5, 2, tmp_path / "lm.arpa")
    with_lm = BeamSearchDecoder(tokenizer, DecodingOptions(method=DecodeMethod.beam, lm=str(arpa), lm_weight=1.0))
    assert tokenizer.decode(with_lm(lp, lengths)[0][0].tokens).strip() == "a ac"


def test_nbest_lists_are_sorted_and_distinct():
    tokenizer = char_tokenizer("ab ")
    lp = random_log_probs(3, 2, 12, tokenizer.vocab_size, sharpness=1.0)
    options = DecodingOptions(method=DecodeMethod.beam, beam_size=16, nbest=5)
    for nbest in BeamSearchDecoder(tokenizer, options)(lp, torch.tensor([12, 9])):
        assert len(nbest) == 5
        scores = [h.score for h in nbest]
        assert scores == sorted(scores, reverse=True)
        assert len({h.tokens for h in nbest}) == 5


@pytest.mark.parametrize(
    "options, message",
    [
        (DecodingOptions(method=DecodeMethod.beam, beam_size=0), "beam_size=0"),
        (DecodingOptions(method=DecodeMethod.beam, nbest=0), "nbest=0"),
        (DecodingOptions(method=DecodeMethod.beam, lm="missing.arpa"), "lm=missing.arpa: file not found"),
    ],
)
def test_bad_decoding_options_name_the_field(options, message):
    with pytest.raises(DecodingError, match=message):
        build_decoder(char_tokenizer("ab"), options)


def test_lexicon_word_outside_the_vocabulary_is_an_error(tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("ab a b |\nxyz x y z |\n")
    with pytest.raises(DecodingError, match=r"'xyz' has characters outside the model's vocabulary"):
        build_decoder(char_tokenizer("ab "), DecodingOptions(method=DecodeMethod.beam, lexicon=str(lexicon)))


def test_lm_words_the_model_cannot_spell_are_left_out_with_one_warning(tmp_path, caplog):
    tokenizer = char_tokenizer("ab ")
    arpa = build_arpa(["ab ba", "ab xy", "zz ab"], 2, tmp_path / "lm.arpa")
    options = DecodingOptions(method=DecodeMethod.beam, lm=str(arpa))
    with caplog.at_level("WARNING"):
        decoders = [build_decoder(tokenizer, options) for _ in range(3)]  # as tuning does
    warnings = [r.getMessage() for r in caplog.records if "cannot be spelled" in r.getMessage()]
    assert len(warnings) == 1 and "2 LM words cannot be spelled" in warnings[0], warnings
    lp = random_log_probs(0, 1, 8, tokenizer.vocab_size)
    text = tokenizer.decode(decoders[0](lp, torch.tensor([8]))[0][0].tokens).strip()
    assert set(text.split()) <= {"ab", "ba"}


def test_corrupt_lm_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_bytes(b"\x00\xff garbage")
    with pytest.raises(DecodingError, match="bad.arpa"):
        build_decoder(char_tokenizer("ab "), DecodingOptions(method=DecodeMethod.beam, lm=str(bad)))


def test_lm_build_tune_and_decode_through_the_cli(trained_tiny, tmp_path):
    from conftest import run_cli

    model_path, manifest, rates = trained_tiny
    arpa = tmp_path / "lm.arpa"
    built = run_cli("lm", "build", str(manifest), "-o", str(arpa), "--order", "2", "--model", str(model_path))
    assert built.returncode == 0, built.stderr
    assert "\\2-grams:" in arpa.read_text() and " yes no" in arpa.read_text().replace("\t", " ")
    tuned = run_cli("lm", "tune", str(model_path), str(manifest), "--lm", str(arpa),
                    "--lm-weights", "0,0.5", "--word-scores", "0")
    assert tuned.returncode == 0, tuned.stderr
    params = json.loads((tmp_path / "lm.arpa.params.json").read_text())
    assert params["lm_weight"] in (0.0, 0.5) and params["wer"] <= rates.wer + 1e-9
    evaluated = run_cli("evaluate", str(model_path), str(manifest), "--lm", str(arpa))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "lm.arpa.params.json" in evaluated.stderr  # the tuned weights were picked up
    wer = float(evaluated.stdout.strip().splitlines()[-1].split()[1])
    assert wer == pytest.approx(params["wer"], abs=1e-6)
    nbest = run_cli("transcribe", str(model_path), str(manifest), "--decode", "beam", "--nbest", "3", "--format", "json")
    assert nbest.returncode == 0, nbest.stderr
    first = json.loads(nbest.stdout.splitlines()[0])
    assert 1 <= len(first["nbest"]) <= 3 and first["nbest"][0]["text"] == first["text"]


def test_bad_decoding_flags_are_one_line_errors(trained_tiny, tmp_path):
    from conftest import run_cli

    model_path, manifest, _ = trained_tiny
    result = run_cli("evaluate", str(model_path), str(manifest), "--decode", "beam", "--beam-size", "0")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == "asr: error: beam_size=0: must be at least 1"
    result = run_cli("evaluate", str(model_path), str(manifest), "--lm", str(tmp_path / "nope.arpa"))
    assert result.returncode == 2 and "nope.arpa: file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_char_lm_learns_and_its_fusion_moves_the_result(tmp_path):
    from asr.charlm import CharLMConfig, CharLMTraining, load_charlm, save_charlm, train_charlm

    tokenizer = char_tokenizer("abcd ")
    texts = ["a ac", "d ac", "a ac b"] * 20 + ["a ab"]
    model, figures = train_charlm(texts, tokenizer, CharLMConfig(hidden_size=32, dropout=0.0),
                                  CharLMTraining(epochs=40, batch_size=8, dev_fraction=0.1))
    assert figures["dev_bits_per_char"] < 1.0  # a uniform guess over 6 outputs costs 2.58 bits
    path = save_charlm(model, tokenizer, tmp_path / "charlm.pt", figures)
    assert load_charlm(path)[1].symbols == tokenizer.symbols

    frames = [{"a": 0.9}, {" ": 0.9}, {"a": 0.9}, {"b": 0.55, "c": 0.45}, {}]
    lp = ambiguous_emissions(tokenizer, frames)
    lengths = torch.tensor([len(frames)])
    plain = BeamSearchDecoder(tokenizer, DecodingOptions(method=DecodeMethod.beam))
    assert tokenizer.decode(plain(lp, lengths)[0][0].tokens).strip() == "a ab"
    fused = BeamSearchDecoder(tokenizer, DecodingOptions(method=DecodeMethod.beam, lm=str(path), lm_weight=1.0))
    assert tokenizer.decode(fused(lp, lengths)[0][0].tokens).strip() == "a ac"


def test_char_lm_of_another_tokenizer_is_refused(tmp_path):
    from asr.charlm import CharLMConfig, CharLMTraining, save_charlm, train_charlm

    model, _ = train_charlm(["ab ba"] * 4, char_tokenizer("ab "), CharLMConfig(hidden_size=8),
                            CharLMTraining(epochs=1))
    path = save_charlm(model, char_tokenizer("ab "), tmp_path / "charlm.pt")
    with pytest.raises(DecodingError, match="another tokenizer"):
        build_decoder(char_tokenizer("abc "), DecodingOptions(method=DecodeMethod.beam, lm=str(path)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA beam search needs a GPU")
def test_cuda_beam_search_agrees_with_cpu_beam_search():
    tokenizer = char_tokenizer("ab ")
    lp = random_log_probs(5, 4, 50, tokenizer.vocab_size, sharpness=3.0)
    lengths = torch.tensor([50, 40, 13, 1])
    options = DecodingOptions(method=DecodeMethod.beam, beam_size=10)
    gpu = build_decoder(tokenizer, options, device="cuda")(lp.cuda(), lengths.cuda())
    cpu = build_decoder(tokenizer, options)(lp, lengths)
    for g, c in zip(gpu, cpu):
        assert tokenizer.decode(g[0].tokens).strip() == tokenizer.decode(c[0].tokens).strip()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA beam search needs a GPU")
def test_cuda_beam_search_gives_plain_token_ids_that_sentencepiece_decodes():
    from asr.tokenizer import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer.train(["one two three", "three two one", "two one"] * 10, "bpe", 12,
                                             TextNormalization())
    lp = random_log_probs(2, 2, 30, tokenizer.vocab_size, sharpness=2.0)
    options = DecodingOptions(method=DecodeMethod.beam, beam_size=8)
    lengths = torch.tensor([30, 17])
    gpu = build_decoder(tokenizer, options, device="cuda")(lp.cuda(), lengths.cuda())
    cpu = build_decoder(tokenizer, options)(lp, lengths)
    for g, c in zip(gpu, cpu):
        assert all(type(t) is int for t in g[0].tokens)
        assert tokenizer.decode(g[0].tokens).strip() == tokenizer.decode(c[0].tokens).strip()


def test_sentencepiece_models_decode_with_and_without_a_word_lm(tmp_path):
    from asr.tokenizer import SentencePieceTokenizer

    texts = ["one two three", "three two one", "two one", "one one two three three", "three one"] * 10
    tokenizer = SentencePieceTokenizer.train(texts, "bpe", 12, TextNormalization())
    lp = random_log_probs(1, 3, 30, tokenizer.vocab_size, sharpness=2.0)
    lengths = torch.tensor([30, 20, 9])
    beam = build_decoder(tokenizer, DecodingOptions(method=DecodeMethod.beam, beam_size=1, log_add=False))
    for nbest, greedy in zip(beam(lp, lengths), greedy_decode(lp, lengths)):
        assert tokenizer.decode(nbest[0].tokens) == tokenizer.decode(greedy.tokens)
    arpa = build_arpa(texts, 2, tmp_path / "lm.arpa")
    with_lm = build_decoder(tokenizer, DecodingOptions(method=DecodeMethod.beam, lm=str(arpa)))
    for nbest in with_lm(lp, lengths):
        assert set(tokenizer.decode(nbest[0].tokens).split()) <= {"one", "two", "three"}


def test_lexicon_words_with_doubled_letters_come_out_whole(tmp_path):
    tokenizer = char_tokenizer("ehort ")
    frames = [{"t": 0.9}, {"h": 0.9}, {"r": 0.9}, {"e": 0.9}, {}, {"e": 0.9}, {" ": 0.9}, {"t": 0.9}, {"o": 0.9}]
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("three\nto\ntoo\n")
    decoder = BeamSearchDecoder(tokenizer, DecodingOptions(method=DecodeMethod.beam, lexicon=str(lexicon)))
    best = decoder(ambiguous_emissions(tokenizer, frames), torch.tensor([len(frames)]))[0][0]
    assert tokenizer.decode(best.tokens) == "three to"


def with_blank_runs(lp: torch.Tensor, every: int, run: int) -> torch.Tensor:
    """(B, T, V) -> (B, T', V): after every ``every`` frames, ``run`` frames of near-certain blank."""
    certain_blank = torch.full((lp.shape[0], run, lp.shape[2]), -12.0)
    certain_blank[:, :, 0] = math.log1p(-(lp.shape[2] - 1) * math.exp(-12.0))
    pieces = [torch.cat([chunk, certain_blank], dim=1) for chunk in lp.split(every, dim=1)]
    return torch.cat(pieces, dim=1)


def test_skipped_blank_frames_keep_tokens_and_frames_of_the_full_search():
    tokenizer = char_tokenizer("abc")
    lp = with_blank_runs(random_log_probs(2, 3, 40, tokenizer.vocab_size, sharpness=3.0), every=4, run=6)
    lengths = torch.tensor([lp.shape[1], 70, 9])
    single = dict(method=DecodeMethod.beam, beam_size=1, log_add=False, token_min_logp=None)
    skipping = BeamSearchDecoder(tokenizer, DecodingOptions(**single))(lp, lengths)
    full = BeamSearchDecoder(tokenizer, DecodingOptions(**single, blank_skip=None))(lp, lengths)
    for skipped, every_frame, greedy in zip(skipping, full, greedy_decode(lp, lengths)):
        assert skipped[0].tokens == every_frame[0].tokens == greedy.tokens
        # frames are numbered as in the model output, not as in the shortened search
        assert skipped[0].frames == every_frame[0].frames == greedy.frames
    wide = DecodingOptions(method=DecodeMethod.beam, beam_size=16)
    for skipped, every_frame in zip(BeamSearchDecoder(tokenizer, wide)(lp, lengths),
                                    BeamSearchDecoder(tokenizer, replace(wide, blank_skip=None))(lp, lengths)):
        assert skipped[0].tokens == every_frame[0].tokens


def test_tokens_below_the_minimum_log_probability_are_not_tried(tmp_path):
    tokenizer = char_tokenizer("ab ")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("ab\n")  # the only word: "a" then a "b" of probability e^-6
    lp = ambiguous_emissions(tokenizer, [{"a": 0.9}, {"b": math.exp(-6.0)}, {}])
    lengths = torch.tensor([3])
    options = DecodingOptions(method=DecodeMethod.beam, lexicon=str(lexicon), word_score=10.0, beam_threshold=50.0)
    decode = lambda **changes: tokenizer.decode(BeamSearchDecoder(tokenizer, replace(options, **changes))(lp, lengths)[0][0].tokens)
    assert decode(token_min_logp=None) == "ab"
    assert decode(token_min_logp=-7.0) == "ab"
    assert decode(token_min_logp=-5.0) == ""


def test_sentencepiece_lexicon_scores_are_real_path_scores(tmp_path):
    """Models without a space token get flashlight's silence token as an extra, impossible
    column; without it, flashlight read the next frame's blank as the silence score, so a
    hypothesis could pass a certain token frame for free."""
    from asr.tokenizer import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer.train(["one two", "two one"] * 20, "bpe", 10, TextNormalization())
    one, two = tokenizer.encode("one"), tokenizer.encode("two")
    certain = one + two + [0, 0]  # each piece of "one", each of "two", two blanks
    lp = torch.full((1, len(certain), tokenizer.vocab_size), -20.0)
    lp[0, len(one) : len(one) + len(two), 0] = -10.0  # through "two", a blank is likelier than "one" again
    lp[0, torch.arange(len(certain)), torch.tensor(certain)] = 0.0
    lp = lp.log_softmax(-1)
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("one\n")  # "two" is not a word: its frames must be paid for
    options = DecodingOptions(method=DecodeMethod.beam, lexicon=str(lexicon), log_add=False, beam_threshold=100.0,
                              blank_skip=None, token_min_logp=None)
    best = BeamSearchDecoder(tokenizer, options)(lp, torch.tensor([len(certain)]))[0][0]
    assert tokenizer.decode(best.tokens) == "one"
    frames = torch.arange(len(certain))
    # the best path: "one", then blanks
    best_path = float(lp[0, frames[: len(one)], torch.tensor(one)].sum() + lp[0, len(one):, 0].sum())
    assert best.score == pytest.approx(best_path, abs=1e-3)
