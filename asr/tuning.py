"""LM weight (alpha) and word insertion score (beta) search on a dev manifest.

The acoustic model runs once; its log-probabilities are cached in memory and every (alpha, beta)
trial only decodes. The best pair is written beside the LM (``<lm>.params.json``), where
``asr transcribe`` / ``asr evaluate`` pick it up when ``--lm-weight``/``--word-score`` are not given.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from asr.data import SpeechDataset, read_manifest
from asr.decoding import BeamSearchDecoder, DecodeMethod, DecodingOptions
from asr.atomic import write_text
from asr.scoring import ErrorRates
from asr.transcribe import Recognizer, iter_hypotheses

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


def cache_log_probs(recognizer: Recognizer, manifest: str | Path) -> tuple[list[torch.Tensor], list[str]]:
    """(T', V) log-probabilities of every manifest entry and its normalized reference text."""
    utts = read_manifest(manifest)
    dataset = SpeechDataset(utts, recognizer.extractor)
    cached: dict[int, torch.Tensor] = {}
    for r in iter_hypotheses(recognizer.model, dataset, device=recognizer.device, progress="acoustic model",
                             keep_log_probs=True):
        cached[r.index] = r.log_probs
    references = [recognizer.tokenizer.normalize(u.text) for u in utts]
    return [cached[i] for i in range(len(utts))], references


def score_decoder(decoder: BeamSearchDecoder, log_probs: Sequence[torch.Tensor], references: Sequence[str]) -> ErrorRates:
    rates = ErrorRates()
    for i, (lp, ref) in enumerate(zip(log_probs, references)):
        best = decoder(lp.unsqueeze(0), torch.tensor([lp.shape[0]]))[0][0]
        rates.add(str(i), ref, decoder.tokenizer.decode(best.tokens).strip())
    return rates


def tune_lm(
    recognizer: Recognizer,
    manifest: str | Path,
    lm: str | Path,
    lm_weights: Sequence[float],
    word_scores: Sequence[float],
    options: DecodingOptions = DecodingOptions(method=DecodeMethod.beam),
) -> list[Trial]:
    """Decode ``manifest`` with every (lm_weight, word_score); trials sorted best first (WER, then CER)."""
    log_probs, references = cache_log_probs(recognizer, manifest)
    trials = []
    grid = list(itertools.product(lm_weights, word_scores))
    for alpha, beta in tqdm(grid, desc="alpha/beta"):
        trial_options = dataclasses.replace(
            options, method=DecodeMethod.beam, lm=str(lm), lm_weight=alpha, word_score=beta, nbest=1
        )
        rates = score_decoder(BeamSearchDecoder(recognizer.tokenizer, trial_options), log_probs, references)
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
