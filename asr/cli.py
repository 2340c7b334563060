"""``asr <command>``: parse arguments, call the library, map user errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from asr import __version__
from asr.errors import AsrError

log = logging.getLogger("asr")

EXIT_USER_ERROR = 2


def cmd_train(args: argparse.Namespace) -> int:
    from asr.config import load_train_config
    from asr.train import train

    cfg = load_train_config(args.overrides, args.config_name, args.config_dir)
    model_path = train(cfg)
    print(model_path)
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.transcribe import Recognizer

    recognizer = Recognizer.load(args.model, device=args.device)
    transcripts = recognizer.transcribe_files(args.audio)
    for t in transcripts:
        if args.format == "json":
            print(json.dumps({"audio_filepath": t.key, "text": t.text, "duration": round(t.duration, 3)}, ensure_ascii=False))
        elif len(transcripts) == 1:
            print(t.text)
        else:
            print(f"{t.key}\t{t.text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from asr.transcribe import Recognizer

    recognizer = Recognizer.load(args.model, device=args.device)
    rates = recognizer.evaluate(args.manifest)
    if args.report:
        rates.write_report(args.report)
        log.info("per-utterance errors: %s", args.report)
    words = sum(u.words for u in rates.utterances)
    print(f"{Path(args.manifest).name}: {len(rates.utterances)} utterances, {words} words")
    print(rates.summary())
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from asr.corpora import prepare_corpus

    for name, path in prepare_corpus(args.corpus, args.data_dir, args.out_dir, seed=args.seed, size=args.size).items():
        print(f"{name}\t{path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="Bidirectional-LSTM CTC speech recognition.")
    parser.add_argument("--version", action="version", version=f"asr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a hydra config",
                       description="Train a model. Extra arguments are hydra overrides, e.g. "
                       "data.train_manifest=train.jsonl model.hidden_size=320 trainer.output_dir=exp/run1. "
                       "Leaves <trainer.output_dir>/model.pt and prints its path.")
    p.add_argument("--config-name", default="config", help="config in the config dir (default: config)")
    p.add_argument("--config-dir", default=None, help="config directory (default: the project's conf/)")
    p.add_argument("overrides", nargs="*", help="hydra overrides key=value")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("transcribe", help="transcribe audio files", description="Transcribe audio files of any "
                       "format libsndfile reads (wav, flac, ogg, mp3, sphere) at any sample rate.")
    p.add_argument("model", help="model.pt written by 'asr train'")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--format", choices=["txt", "json"], default="txt",
                   help="txt: the text (path<TAB>text for several files); json: one object per line")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("evaluate", help="score a model on a manifest",
                       description="Decode a manifest and print WER/CER; the last line is 'WER <x> CER <y>' (percent).")
    p.add_argument("model")
    p.add_argument("manifest", help="JSON-lines manifest with audio_filepath, duration, text")
    p.add_argument("--report", help="write per-utterance reference/hypothesis/errors (JSON lines) here")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("prepare", help="prepare a corpus into manifests",
                       description="Write train/dev/test manifests for a corpus under OUT_DIR.")
    p.add_argument("corpus", choices=["synth", "fsdd", "fsdd-speaker"])
    p.add_argument("out_dir")
    p.add_argument("--data-dir", help="the corpus's local copy (fsdd: the folder holding recordings/)")
    p.add_argument("--size", type=int, default=None, help="synth: number of utterances to generate")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s" if args.verbose else "%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except AsrError as exc:
        if args.verbose:
            raise
        print(f"asr: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("asr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
