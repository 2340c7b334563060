"""Hotwords: a listed word the LM never saw becomes reachable and wins where the audio says it;
bad lists are one-line errors."""

import pytest
import torch

from asr.decoding import BeamSearchDecoder, DecodeMethod, DecodingOptions, build_decoder
from asr.errors import DecodingError
from asr.hotwords import DEFAULT_BOOST, parse_hotwords, read_hotwords
from asr.ngram import build_arpa
from asr.tokenizer import CharTokenizer, TextNormalization

TOKENIZER = CharTokenizer(sorted(" acdehijlmnorvwyz"), TextNormalization())


def spoken(text: str, frames_per_char: int = 3, confidence: float = 0.6) -> torch.Tensor:
    """(1, T, V) log-probs of a model that hears ``text`` clearly but not certainly: each
    character for a few frames (the rest of the mass on the blank), blanks between."""
    rows = []
    for char in text:
        row = torch.full((TOKENIZER.vocab_size,), 1e-4)
        row[TOKENIZER.index[char]], row[0] = confidence, 1 - confidence
        rows += [row] * frames_per_char + [torch.nn.functional.one_hot(torch.tensor(0), TOKENIZER.vocab_size) + 1e-4]
    return torch.stack(rows).log().log_softmax(-1).unsqueeze(0)


@pytest.fixture
def lm(tmp_path):
    return str(build_arpa(["call john", "call mary", "call mary now"] * 10, 3, tmp_path / "lm.arpa"))


def decode(lm: str, text: str, hotwords=None) -> str:
    options = DecodingOptions(method=DecodeMethod.beam, lm=lm, lm_weight=1.0)
    log_probs = spoken(text)
    hyp = BeamSearchDecoder(TOKENIZER, options, hotwords=hotwords)(log_probs, torch.tensor([log_probs.shape[1]]))
    return TOKENIZER.decode(hyp[0][0].tokens).strip()


def test_a_hotword_outside_the_lm_is_recognized_and_others_are_not_disturbed(lm):
    assert decode(lm, "call zelda") != "call zelda"  # not in the LM's words: unreachable
    assert decode(lm, "call zelda", {"zelda": DEFAULT_BOOST}) == "call zelda"
    assert decode(lm, "call mary", {"zelda": DEFAULT_BOOST}) == "call mary"  # where the audio says another word
    assert decode(lm, "call mary", {"mary": DEFAULT_BOOST}) == "call mary"  # a hotword the LM knows


def test_hotwords_from_a_file_and_their_errors(lm, tmp_path):
    path = tmp_path / "hot.txt"
    path.write_text("# names\nzelda\nmarcel 7.5\n\n")
    assert read_hotwords(path) == {"zelda": DEFAULT_BOOST, "marcel": 7.5}
    options = DecodingOptions(method=DecodeMethod.beam, lm=lm, lm_weight=1.0, hotwords=str(path))
    log_probs = spoken("call zelda")
    assert TOKENIZER.decode(build_decoder(TOKENIZER, options)(log_probs, torch.tensor([log_probs.shape[1]]))[0][0]
                            .tokens).strip() == "call zelda"
    bad = {"two words": ["new york"], "a boost that is text": ["zelda loud"], "zero boost": {"zelda": 0},
           "not a word": [""], "a boolean boost": {"zelda": True}}
    for name, items in bad.items():
        with pytest.raises(DecodingError, match="hotwords"):
            parse_hotwords(items)
    with pytest.raises(DecodingError, match="hotwords file not found"):
        read_hotwords(tmp_path / "nope.txt")
    with pytest.raises(DecodingError, match="need beam search with a word LM"):
        DecodingOptions(method=DecodeMethod.beam, hotwords=str(path)).validate()
    with pytest.raises(DecodingError, match="'q'"):  # a word the model's characters cannot spell
        decode(lm, "call zelda", {"quentin": 5.0})


def test_the_boost_is_added_to_the_lm_score_and_unseen_words_start_from_a_rare_words(lm, tmp_path):
    from torchaudio.models.decoder._ctc_decoder import _create_word_dict, _KenLM, _load_words

    from asr.hotwords import UNSEEN_WORD_LOG10, hotword_lm
    from asr.lexicon import UNK_WORD, write_lexicon

    lexicon = tmp_path / "lexicon.txt"
    write_lexicon(["call", "mary", "john", "zelda"], TOKENIZER, lexicon, skip_unspellable=False)
    words = _create_word_dict(_load_words(str(lexicon)))
    plain, boosted = _KenLM(lm, words), hotword_lm(lm, str(lexicon), {"mary": 2.0, "zelda": 3.0}, UNK_WORD)
    after_call = {}
    for name, model in (("plain", plain), ("boosted", boosted)):
        state, _ = model.score(model.start(False), words.get_index("call"))
        after_call[name] = {w: model.score(state, words.get_index(w))[1] for w in ("mary", "john", "zelda")}
    assert after_call["boosted"]["mary"] == pytest.approx(min(0.0, after_call["plain"]["mary"] + 2.0))
    assert after_call["boosted"]["john"] == pytest.approx(after_call["plain"]["john"])
    unseen = max(after_call["plain"]["zelda"], UNSEEN_WORD_LOG10)  # <unk>'s score, or a rare word's
    assert after_call["boosted"]["zelda"] == pytest.approx(min(0.0, unseen + 3.0))  # never above log10(1)
