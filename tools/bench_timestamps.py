"""Word timestamp accuracy against known word boundaries.

    python tools/bench_timestamps.py MODEL MANIFEST ALIGNMENTS [--lm LM]

ALIGNMENTS is JSON lines ``{"audio_filepath", "words": [{"word", "start", "end"}]}`` with the true
boundaries (``asr prepare fsdd`` writes them for its connected digit strings: each digit is one
clip, so its boundaries are known from the concatenation). Utterances whose recognized words
equal the reference are compared word by word; the mean absolute start and end errors are
reported, with how many utterances and words that covers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.data import read_manifest  # noqa: E402
from asr.decoding import DecodeMethod, DecodingOptions  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("alignments")
    parser.add_argument("--lm", help="decode with beam search and this LM")
    args = parser.parse_args()

    options = DecodingOptions(method=DecodeMethod.beam, lm=args.lm) if args.lm else DecodingOptions()
    recognizer = Recognizer.load(args.model, "cpu", options)
    truth = {}
    for line in Path(args.alignments).read_text().splitlines():
        record = json.loads(line)
        truth[Path(record["audio_filepath"]).name] = record["words"]
    utts = [u for u in read_manifest(args.manifest) if u.audio_filepath.name in truth]
    print(f"command: {' '.join(sys.argv)}")
    for speech_edges in (False, True):
        transcripts = recognizer.transcribe(utts, timestamps=True, speech_edges=speech_edges)
        print("edges at the speech around each word:" if speech_edges else "edges from the CTC spans alone:")
        report(utts, transcripts, truth, recognizer.seconds_per_frame)


def report(utts: list, transcripts: list, truth: dict, seconds_per_frame: float) -> None:
    start_errors, end_errors, matched = [], [], 0
    for utt, t in zip(utts, transcripts):
        reference = truth[utt.audio_filepath.name]
        if [w.word for w in t.words] != [w["word"] for w in reference]:
            continue
        matched += 1
        for hyp, ref in zip(t.words, reference):
            start_errors.append(abs(hyp.start - ref["start"]))
            end_errors.append(abs(hyp.end - ref["end"]))
    if not start_errors:
        sys.exit("no utterance was recognized exactly; nothing to compare")
    mean = lambda xs: 1000 * sum(xs) / len(xs)  # noqa: E731
    print(f"  {matched}/{len(utts)} utterances recognized exactly, {len(start_errors)} words compared; "
          f"frame {1000 * seconds_per_frame:.0f} ms")
    print(f"  mean |start error| {mean(start_errors):.1f} ms, mean |end error| {mean(end_errors):.1f} ms, "
          f"mean of both {mean(start_errors + end_errors):.1f} ms")


if __name__ == "__main__":
    main()
