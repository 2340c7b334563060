"""A character (token) level LSTM language model, and its shallow fusion into beam search.

The LM predicts the acoustic model's own tokens, so it is trained with that model's tokenizer
(``asr lm train TEXT --model MODEL``); index 0, the CTC blank, which never occurs in text,
marks the start and the end of a sentence. Beam search fuses it lexicon-free through
torchaudio's :class:`~torchaudio.models.decoder.CTCDecoderLM` interface: every new token a
hypothesis takes is scored ``lm_weight * log p(token | history)``.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm import tqdm

from asr.checkpoint import load_checkpoint, save_checkpoint
from asr.errors import CheckpointError, DecodingError
from asr.tokenizer import BLANK_ID, Tokenizer, tokenizer_from_dict

log = logging.getLogger(__name__)
BOUNDARY = BLANK_ID  # sentence start and end
LN10 = math.log(10)


@dataclass(frozen=True)
class CharLMConfig:
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.1


@dataclass(frozen=True)
class CharLMTraining:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    dev_fraction: float = 0.05
    seed: int = 0


class CharLM(nn.Module):
    """Next-token LSTM over a tokenizer's ids; (B, L) ids -> (B, L, V) log-probabilities."""

    def __init__(self, vocab_size: int, cfg: CharLMConfig):
        super().__init__()
        self.vocab_size, self.cfg = vocab_size, cfg
        self.embed = nn.Embedding(vocab_size, cfg.embedding_size)
        self.rnn = nn.LSTM(cfg.embedding_size, cfg.hidden_size, cfg.num_layers, batch_first=True,
                           dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor, state=None):
        hidden, state = self.rnn(self.drop(self.embed(ids)), state)
        return self.out(self.drop(hidden)).log_softmax(-1), state


def _sequences(texts: Sequence[str], tokenizer: Tokenizer) -> list[list[int]]:
    return [[BOUNDARY] + ids + [BOUNDARY] for ids in (tokenizer.encode(t) for t in texts) if ids]


def _batch_nll(model: CharLM, batch: list[list[int]]) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood (nats) of each sequence's tokens after the first, and their count."""
    inputs = nn.utils.rnn.pad_sequence([torch.tensor(s[:-1]) for s in batch], batch_first=True)
    targets = nn.utils.rnn.pad_sequence([torch.tensor(s[1:]) for s in batch], batch_first=True, padding_value=-100)
    log_probs, _ = model(inputs)
    nll = nn.functional.nll_loss(log_probs.transpose(1, 2), targets, ignore_index=-100, reduction="sum")
    return nll, int((targets != -100).sum())


def evaluate_charlm(model: CharLM, sequences: list[list[int]], batch_size: int = 128) -> float:
    """Mean negative log-likelihood per predicted token, in nats."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(sequences), batch_size):
            nll, n = _batch_nll(model, sequences[i: i + batch_size])
            total, count = total + float(nll), count + n
    return total / max(count, 1)


def train_charlm(
    texts: Sequence[str], tokenizer: Tokenizer, cfg: CharLMConfig = CharLMConfig(),
    training: CharLMTraining = CharLMTraining(),
) -> tuple[CharLM, dict]:
    """Train on ``texts`` (a held-out share for dev); returns the model (best dev epoch) and
    figures: dev perplexity per token and bits per character."""
    torch.manual_seed(training.seed)
    sequences = _sequences(texts, tokenizer)
    if len(sequences) < 2:
        raise DecodingError("cannot train a character LM: fewer than 2 non-empty sentences")
    random.Random(training.seed).shuffle(sequences)
    n_dev = max(1, int(len(sequences) * training.dev_fraction))
    dev, train = sequences[:n_dev], sequences[n_dev:]
    model = CharLM(tokenizer.vocab_size, cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr)
    best, best_state = math.inf, None
    rng = random.Random(training.seed)
    for epoch in range(1, training.epochs + 1):
        model.train()
        rng.shuffle(train)
        bar = tqdm(range(0, len(train), training.batch_size), desc=f"char LM epoch {epoch}", leave=False)
        for i in bar:
            nll, count = _batch_nll(model, train[i: i + training.batch_size])
            optimizer.zero_grad()
            (nll / count).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        dev_nll = evaluate_charlm(model, dev)
        log.info("char LM epoch %d: dev perplexity %.3f, %.3f bits per character", epoch, math.exp(dev_nll),
                 dev_nll / math.log(2))
        if dev_nll < best:
            best, best_state = dev_nll, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return model, {"dev_perplexity": math.exp(best), "dev_bits_per_char": best / math.log(2),
                   "train_sentences": len(train), "dev_sentences": len(dev)}


def save_charlm(model: CharLM, tokenizer: Tokenizer, path: str | Path, figures: dict | None = None) -> Path:
    return save_checkpoint({"format_version": 1, "kind": "charlm", "config": asdict(model.cfg),
                            "tokenizer": tokenizer.to_dict(), "state_dict": model.state_dict(),
                            "figures": figures or {}}, path)


def load_charlm(path: str | Path) -> tuple[CharLM, Tokenizer]:
    state = load_checkpoint(path)
    if state.get("kind") != "charlm":
        raise CheckpointError(f"{path}: not a character LM (made by 'asr lm train')")
    tokenizer = tokenizer_from_dict(state["tokenizer"])
    model = CharLM(tokenizer.vocab_size, CharLMConfig(**state["config"]))
    model.load_state_dict(state["state_dict"])
    return model.eval(), tokenizer


def is_charlm(path: str | Path) -> bool:
    """Whether ``path`` is a char-LM checkpoint (a zip written by torch.save) rather than KenLM."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def fusion_lm(model: CharLM):
    """The LM as a :class:`CTCDecoderLM` for lexicon-free beam search. Scores are log10, as
    KenLM's are, so LM weights mean the same for both kinds of LM."""
    from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

    class CharFusionLM(CTCDecoderLM):
        """The decoder scores every candidate token of every hypothesis, but only the few that
        survive pruning are extended further; so a child state's LSTM step is taken lazily, when
        the child is first extended, and each state's next-token scores are a Python list."""

        def __init__(self):
            CTCDecoderLM.__init__(self)
            self.scores: dict = {}  # LM state -> log10 P(next token) as a list
            self.lstm: dict = {}  # LM state -> the LSTM state after its tokens
            self.pending: dict = {}  # LM state not stepped yet -> (parent state, token or None)

        def _step(self, state, token: int, lstm_state) -> None:
            with torch.inference_mode():
                log_probs, lstm_state = model(torch.tensor([[token]]), lstm_state)
            self.scores[state] = (log_probs[0, 0] / LN10).tolist()
            self.lstm[state] = lstm_state

        def _expanded(self, state) -> list[float]:
            if state not in self.scores:
                parent, token = self.pending.pop(state)
                self._expanded(parent)
                if token is None:  # the decoder's added silence token: not a character
                    self.scores[state], self.lstm[state] = self.scores[parent], self.lstm[parent]
                else:
                    self._step(state, token, self.lstm[parent])
            return self.scores[state]

        def start(self, start_with_nothing: bool):
            self.scores.clear()  # one utterance at a time: forget the previous one's states
            self.lstm.clear()
            self.pending.clear()
            state = CTCDecoderLMState()
            self._step(state, BOUNDARY, None)
            return state

        def score(self, state, token: int):
            child = state.child(token)
            silence = token >= model.vocab_size
            if child not in self.scores and child not in self.pending:
                self.pending[child] = (state, None if silence else token)
            return child, 0.0 if silence else self._expanded(state)[token]

        def finish(self, state):
            return state, self._expanded(state)[BOUNDARY]

    return CharFusionLM()
