import pytest

from asr.errors import TokenizerError
from asr.tokenizer import BLANK_ID, TextNormalization, TokenizerConfig, TokenizerKind, tokenizer_from_dict, train_tokenizer

TEXTS = ["Turn on the kitchen lights!", "call Mary at seven o'clock", "play some jazz music, please"] * 20


def test_normalization_is_declared_and_applied():
    norm = TextNormalization(lowercase=True, keep_punctuation=False)
    assert norm("  Hello,   WORLD!  It's  ") == "hello world it's"
    assert TextNormalization(lowercase=False, keep_punctuation=True)("A, b.") == "A, b."


def test_char_tokenizer_round_trip_with_blank_at_zero():
    tok = train_tokenizer(TokenizerConfig(kind=TokenizerKind.char), TEXTS)
    ids = tok.encode("Call Mary, please!")
    assert BLANK_ID not in ids and min(ids) >= 1
    assert tok.decode(ids) == "call mary please"
    assert tok.decode([BLANK_ID] + ids + [BLANK_ID]) == "call mary please"
    assert tok.vocab_size == len(set("".join(tok.normalize(t) for t in TEXTS))) + 1


def test_char_tokenizer_drops_unknown_characters():
    tok = train_tokenizer(TokenizerConfig(), ["ab ab"])
    assert tok.decode(tok.encode("abz")) == "ab"


@pytest.mark.parametrize("kind", [TokenizerKind.bpe, TokenizerKind.unigram])
def test_sentencepiece_round_trip(kind):
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=40), TEXTS)
    ids = tok.encode("turn on the music")
    assert BLANK_ID not in ids
    assert tok.decode(ids) == "turn on the music"
    assert tok.vocab_size <= 41


@pytest.mark.parametrize("kind", list(TokenizerKind))
def test_tokenizers_survive_serialization_as_plain_data(kind):
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=40), TEXTS)
    again = tokenizer_from_dict(tok.to_dict())
    text = "call mary at seven o'clock"
    assert again.encode(text) == tok.encode(text) and again.vocab_size == tok.vocab_size


def test_empty_training_text_is_a_clear_error():
    with pytest.raises(TokenizerError, match="empty"):
        train_tokenizer(TokenizerConfig(), ["", "  "])


@pytest.mark.parametrize("text, spoken", [
    ("42", "forty two"),
    ("in 1905", "in one thousand nine hundred five"),
    ("1,000,000 people", "one million people"),
    ("call 007", "call zero zero seven"),
    ("mp3 and 3.5", "mp three and three five"),
    ("100 200", "one hundred two hundred"),
    ("0", "zero"),
])
def test_digit_spelling(text, spoken):
    assert TextNormalization(digits="spell")(text) == spoken
    assert TextNormalization()(text) == TextNormalization()(text.replace(",", " "))  # "keep" leaves digits


def test_digit_policy_travels_with_the_tokenizer():
    from asr.tokenizer import DigitPolicy

    cfg = TokenizerConfig(kind=TokenizerKind.char, digits=DigitPolicy.spell)
    tok = train_tokenizer(cfg, ["twenty one", "nine"])
    assert tok.decode(tok.encode("21")) == "twenty one"
    restored = tokenizer_from_dict(tok.to_dict())
    assert restored.normalize.digits == "spell" and restored.encode("21") == tok.encode("21")
    old = tok.to_dict()
    del old["normalization"]["digits"]  # checkpoints written before the option existed
    assert tokenizer_from_dict(old).normalize.digits == "keep"
