"""Hotwords: recall of names the LM never saw, with and without them as hotwords.

    python tools/bench_hotwords.py MODEL LM [--utterances 80] [--boosts 2,5,10] [--out hotwords_test]

Synthesizes a test set with the default corpus's held-out test voices: its sentence templates that
take a name, filled with names that are in neither the corpus nor the LM. Each is decoded with beam
search and the LM, without hotwords and with the new names as hotwords at each boost. Reports the
recall of the names (occurrences recognized) and the WER of the other words (names removed from
reference and hypothesis before scoring), and the same on the default test set with its own names
(john, mary...) as hotwords, to see what boosting costs where it is not needed.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.corpora.synth import PITCH_RANGE, RATE_RANGE, SLOTS, SPLIT_VOICES, TEMPLATES, SynthItem, date_phrase, \
    synthesize, time_phrase  # noqa: E402
from asr.corpora.voices import Request  # noqa: E402
from asr.data import read_manifest, write_manifest  # noqa: E402
from asr.decoding import decoding_options  # noqa: E402
from asr.scoring import score  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402

NEW_NAMES = ["zelda", "oswald", "harriet", "rupert", "imogen", "gideon", "ursula", "barnaby", "winifred", "horace"]


def fill(template: str, name: str, r: random.Random) -> str:
    text = template.replace("{name}", name, 1)
    for slot, values in SLOTS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", r.choice(values), 1)
    return text.replace("{time}", time_phrase(r)).replace("{date}", date_phrase(r))


def names_test_set(out: Path, count: int, seed: int = 0) -> Path:
    """``count`` utterances naming one of NEW_NAMES each, by the test split's voices."""
    manifest = out / "names.jsonl"
    if manifest.exists():
        return manifest
    r = random.Random(seed)
    templates = [t for t in TEMPLATES if "{name}" in t]
    voices = [v for _, group in SPLIT_VOICES["test"] for v in group]
    items = [SynthItem("names", f"names-{i:04d}", Request(r.choice(voices), fill(r.choice(templates), NEW_NAMES[
        i % len(NEW_NAMES)], r), round(r.uniform(*RATE_RANGE), 3), round(r.uniform(*PITCH_RANGE), 3)))
             for i in range(count)]
    (out / "wav").mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, synthesize(items, out / "wav"))
    return manifest


def rates(recognizer: Recognizer, manifest: Path, names: list[str]) -> tuple[float, float]:
    """(recall % of the names' occurrences, WER % of the other words)."""
    utts = read_manifest(manifest)
    hyps = [t.text for t in recognizer.transcribe(utts, timestamps=False)]
    refs = [recognizer.tokenizer.normalize(u.text) for u in utts]
    found = total = 0
    for ref, hyp in zip(refs, hyps):
        for name in names:
            n = ref.split().count(name)
            total += n
            found += min(n, hyp.split().count(name))
    def others(texts: list[str]) -> list[str]:
        return [" ".join(w for w in text.split() if w not in names) for text in texts]

    return 100 * found / max(total, 1), score(others(refs), others(hyps)).wer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("lm")
    parser.add_argument("--test", help="the default test set (its names as hotwords too)")
    parser.add_argument("--utterances", type=int, default=80)
    parser.add_argument("--boosts", default="2,5,10")
    parser.add_argument("--skip-names", action="store_true", help="only the --test set")
    parser.add_argument("--out", default="hotwords_test")
    parser.add_argument("--token-min-logp", type=float, default=-5.0, help="beam search's token pruning (0: none)")
    args = parser.parse_args()
    manifest = names_test_set(Path(args.out), args.utterances)
    print(f"command: {' '.join(sys.argv)}")
    print(f"{'test set':<30} {'hotwords':<22} {'name recall %':>14} {'other words WER %':>18}")
    sets = [] if args.skip_names else [(manifest, NEW_NAMES)]
    sets += [(Path(args.test), SLOTS["name"])] if args.test else []
    for path, names in sets:
        for boost in [None] + [float(b) for b in args.boosts.split(",")]:
            hotwords = {name: boost for name in names} if boost else None
            options = decoding_options(lm=args.lm, token_min_logp=args.token_min_logp or None)
            recognizer = Recognizer.load(args.model, "cpu", options)
            if hotwords:
                recognizer = recognizer.with_hotwords(hotwords)
            recall, wer = rates(recognizer, path, names)
            label = f"{len(names)} names, boost {boost:g}" if boost else "none"
            print(f"{str(path):<30} {label:<22} {recall:>14.1f} {wer:>18.2f}", flush=True)


if __name__ == "__main__":
    main()
