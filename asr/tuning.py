"""LM weight (alpha) and word insertion score (beta) search on a dev manifest.

The acoustic model runs once and the LM is loaded once; the log-probabilities are kept in memory
and every (alpha, beta) trial only decodes. The best pair is written beside the LM (``<lm>.params.json``), where
``asr transcribe`` / ``asr evaluate`` pick it up when ``--lm-weight``/``--word-score`` are not given.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from asr.atomic import write_text
from asr.data import Utterance, read_manifest
from asr.decoding import BeamSearchDecoder, DecodeMethod, DecodingOptions
from asr.transcribe import Recognizer, Transcript, raise_unusable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    lm_weight: float
    word_score: float
    wer: float
    cer: float


def params_path(lm: str | Path) -> Path:
    return Path(f"{lm}.params.json")


def tuned_params(lm: str | Path) -> dict | None:
    """The tuned ``{"lm_weight", "word_score"}`` stored beside ``lm``, if any."""
    path = params_path(lm)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {"lm_weight": float(data["lm_weight"]), "word_score": float(data["word_score"])}


def cached_log_probs(recognizer: Recognizer, manifest: str | Path) -> tuple[list[Utterance], list[Transcript]]:
    """The manifest's utterances and their greedy transcripts, each with its (T', V) log-probabilities."""
    utts = read_manifest(manifest)
    return utts, raise_unusable(recognizer.recognize_all(utts, keep_log_probs=True, long_audio=math.inf))


def redecode(decoder: BeamSearchDecoder, transcripts: Sequence[Transcript]) -> list[Transcript]:
    """The transcripts decoded again from their kept log-probabilities, one utterance at a time."""
    redone = []
    for t in transcripts:
        best = decoder(t.log_probs.unsqueeze(0), torch.tensor([t.log_probs.shape[0]]))[0][0]
        redone.append(dataclasses.replace(t, text=decoder.tokenizer.decode(best.tokens).strip(), score=best.score))
    return redone


def tune_lm(
    recognizer: Recognizer,
    manifest: str | Path,
    lm: str | Path,
    lm_weights: Sequence[float],
    word_scores: Sequence[float],
    options: DecodingOptions = DecodingOptions(method=DecodeMethod.beam),
) -> list[Trial]:
    """Decode ``manifest`` with every (lm_weight, word_score); trials sorted best first (WER, then
    CER). The acoustic model runs once and the LM is loaded once."""
    utts, transcripts = cached_log_probs(recognizer, manifest)
    trials = []
    grid = list(itertools.product(lm_weights, word_scores))
    base = BeamSearchDecoder(recognizer.tokenizer, dataclasses.replace(options, method=DecodeMethod.beam, lm=str(lm),
                                                                        lm_weight=grid[0][0], word_score=grid[0][1], nbest=1))
    for alpha, beta in tqdm(grid, desc="alpha/beta"):
        rates = recognizer.score(utts, redecode(base.with_weights(alpha, beta), transcripts))
        trials.append(Trial(alpha, beta, rates.wer, rates.cer))
        log.debug("lm_weight %.3f word_score %.3f: WER %.2f CER %.2f", alpha, beta, rates.wer, rates.cer)
    return sorted(trials, key=lambda t: (t.wer, t.cer, abs(t.lm_weight), abs(t.word_score)))


def save_tuned(lm: str | Path, best: Trial, manifest: str | Path) -> Path:
    record = {
        "lm_weight": best.lm_weight,
        "word_score": best.word_score,
        "tuned_on": str(manifest),
        "wer": round(best.wer, 4),
        "cer": round(best.cer, 4),
    }
    return write_text(params_path(lm), json.dumps(record, indent=2) + "\n")
