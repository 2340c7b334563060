"""Decoder comparison on identical model outputs: WER, utterances/s and real-time factor.

    python tools/bench_decode.py MODEL MANIFEST --lm LM.arpa [--char-lm LM.pt] [--beam-size 32]
        [--limit N] [--pyctcdecode]

The acoustic model runs once; every decoder then decodes the same cached (T', V)
log-probabilities, one utterance at a time, so the timings are decoding only. RTF is decoding
seconds / audio seconds. Rows: greedy, beam (no LM), beam + n-gram LM (the tuned weights from
``asr lm tune`` when present), beam + the character-RNN LM of ``asr lm train`` (its tuned weights
likewise) with --char-lm, and with --pyctcdecode, pyctcdecode with the same ARPA file and
beam width and the same LM weights in its units (``pip install -e '.[bench]'``; not a dependency
of asr).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.decoding import BeamSearchDecoder, DecodeMethod, DecodingOptions, greedy_decode  # noqa: E402
from asr.lexicon import WORD_BOUNDARY, decoder_symbols  # noqa: E402
from asr.scoring import ErrorRates  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402
from asr.tuning import cached_log_probs, tuned_params  # noqa: E402


def run(name, decode_one, log_probs, references, audio_seconds):
    rates = ErrorRates()
    start = time.perf_counter()
    texts = [decode_one(lp) for lp in log_probs]
    seconds = time.perf_counter() - start
    for i, (ref, hyp) in enumerate(zip(references, texts)):
        rates.add(str(i), ref, hyp)
    return name, rates.wer, rates.cer, len(log_probs) / seconds, seconds / audio_seconds


def pyctcdecode_decoder(recognizer: Recognizer, lm: str, alpha: float, beta: float, beam_size: int):
    from pyctcdecode import build_ctcdecoder

    # the symbols flashlight gets, in pyctcdecode's spelling: "" for blank, " " between words
    # (sentencepiece pieces keep their '▁', which pyctcdecode reads as BPE)
    labels = [""] + [" " if s == WORD_BOUNDARY else s for s in decoder_symbols(recognizer.tokenizer)[1:]]
    # flashlight adds alpha * log10 P(word); pyctcdecode converts KenLM's log10 to natural log
    # first (alpha * ln 10 * log10 P), so the same weighting needs alpha / ln 10 there.
    decoder = build_ctcdecoder(labels, kenlm_model_path=lm, alpha=alpha / math.log(10), beta=beta)
    return lambda lp: decoder.decode(lp.numpy(), beam_width=beam_size).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--lm", required=True)
    parser.add_argument("--char-lm", help="add beam search fused with this character-RNN LM")
    parser.add_argument("--beam-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="use the first N utterances (0: all)")
    parser.add_argument("--pyctcdecode", action="store_true", help="add pyctcdecode with the same LM and beam")
    args = parser.parse_args()

    recognizer = Recognizer.load(args.model, "cpu")
    utts, transcripts = cached_log_probs(recognizer, args.manifest)
    log_probs = [t.log_probs for t in transcripts]
    references = [recognizer.tokenizer.normalize(u.text) for u in utts]
    if args.limit:
        log_probs, references, utts = log_probs[: args.limit], references[: args.limit], utts[: args.limit]
    audio_seconds = sum(u.duration for u in utts)
    tok = recognizer.tokenizer
    beam = DecodingOptions(method=DecodeMethod.beam, beam_size=args.beam_size)

    def with_tuned_weights(lm: str) -> DecodingOptions:  # as 'asr transcribe --lm' would decode
        defaults = {"lm_weight": beam.lm_weight, "word_score": beam.word_score}
        return dataclasses.replace(beam, lm=lm, **(tuned_params(lm) or defaults))

    no_lm = BeamSearchDecoder(tok, beam)
    with_lm_options = with_tuned_weights(args.lm)
    weights = {"lm_weight": with_lm_options.lm_weight, "word_score": with_lm_options.word_score}
    with_lm = BeamSearchDecoder(tok, with_lm_options)

    def one(decoder):
        return lambda lp: tok.decode(decoder(lp.unsqueeze(0), torch.tensor([lp.shape[0]]))[0][0].tokens).strip()

    rows = [
        run("greedy", lambda lp: tok.decode(greedy_decode(lp.unsqueeze(0), torch.tensor([lp.shape[0]]))[0].tokens).strip(),
            log_probs, references, audio_seconds),
        run(f"beam {args.beam_size}", one(no_lm), log_probs, references, audio_seconds),
        run(f"beam {args.beam_size} + n-gram", one(with_lm), log_probs, references, audio_seconds),
    ]
    if args.char_lm:
        char_lm = BeamSearchDecoder(tok, with_tuned_weights(args.char_lm))
        rows.append(run(f"beam {args.beam_size} + char-RNN", one(char_lm), log_probs, references, audio_seconds))
    if args.pyctcdecode:
        decode = pyctcdecode_decoder(recognizer, args.lm, weights["lm_weight"], weights["word_score"], args.beam_size)
        rows.append(run(f"pyctcdecode {args.beam_size} + n-gram", decode, log_probs, references, audio_seconds))

    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"{len(log_probs)} utterances, {audio_seconds:.1f} s of audio; LM weights {weights}")
    print(f"{'decoder':<28} {'WER':>7} {'CER':>7} {'utt/s':>9} {'RTF':>9}")
    for name, wer, cer, ups, rtf in rows:
        print(f"{name:<28} {wer:>7.2f} {cer:>7.2f} {ups:>9.1f} {rtf:>9.5f}")


if __name__ == "__main__":
    main()
