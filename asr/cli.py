"""``asr <command>``: parse arguments, call the library, map user errors to exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import re
import sys
from pathlib import Path

from asr.cli_args import build_parser, join_list_values
from asr.errors import AsrError

log = logging.getLogger("asr")

EXIT_USER_ERROR = 2


def cmd_train(args: argparse.Namespace) -> int:
    from asr.config import load_train_config
    from asr.train import train

    cfg = load_train_config(args.overrides, args.config_name, args.config_dir)
    model_path = train(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, once for the run
        print(model_path)
    return 0


def decoding_options(args: argparse.Namespace):
    from asr.decoding import decoding_options

    return decoding_options(
        method=args.decode, lm=args.lm, lexicon=args.lexicon, hotwords=args.hotwords, lm_weight=args.lm_weight,
        word_score=args.word_score,
        beam_size=args.beam_size, beam_size_token=args.beam_size_token, beam_threshold=args.beam_threshold,
        nbest=args.nbest, blank_skip=None if args.blank_skip == 0 else args.blank_skip,
        token_min_logp=None if args.token_min_logp == 0 else args.token_min_logp,
    )


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.outputs import OutputFormat, TranscriptWriter, report_incomplete, warn_skipped
    from asr.transcribe import Recognizer, collect_inputs

    fmt = OutputFormat(args.format)
    recognizer = Recognizer.load(args.model, device=args.device, options=decoding_options(args))
    utts, failed = collect_inputs(args.audio)
    if len(failed) == 1 and not utts:
        raise AsrError(failed[0][1])
    if not utts and not failed:
        raise AsrError("no audio to transcribe in " + " ".join(args.audio))
    if len(utts) + len(failed) > 1 and fmt in (OutputFormat.srt, OutputFormat.vtt, OutputFormat.tsv) and not args.output_dir:
        raise AsrError(f"--format {fmt.value} with several inputs needs --output-dir (one file per input)")
    for _, reason in failed:
        warn_skipped(reason)
    if args.speaker_norm == "labels":  # one speaker unless a manifest says otherwise
        utts = [u if u.speaker else dataclasses.replace(u, speaker="inputs") for u in utts]
    total, unreadable = len(utts) + len(failed), len(failed)
    writer, interrupted = TranscriptWriter(utts, fmt, args.output_dir), False
    try:
        for index, transcript in recognizer.recognize(utts, timestamps=fmt is not OutputFormat.txt,
                                                      **speaker_options(args)):
            if transcript.error is None:
                writer.finished(index, transcript)
            elif total == 1:
                raise AsrError(transcript.error)
            else:
                failed.append((transcript.key, transcript.error))
                warn_skipped(transcript.error)
    except KeyboardInterrupt:
        interrupted = True  # what finished is still written below
    writer.close()
    if failed or interrupted:
        missing = len(utts) - len(writer.done) - (len(failed) - unreadable)
        report_incomplete(len(writer.done), total, len(failed), missing if interrupted else None)
    return 130 if interrupted else (1 if failed else 0)


def cmd_stream(args: argparse.Namespace) -> int:
    from asr.sources import Microphone, file_blocks, list_devices, stdin_blocks
    from asr.transcribe import Recognizer

    if args.list_devices:
        print(list_devices())
        return 0
    if args.model is None:
        raise AsrError("stream needs MODEL (or --list-devices)")
    if args.rate is not None and args.rate <= 0:
        raise AsrError(f"--rate {args.rate}: must be a positive sample rate")
    input_device = stream_input_device(args)
    recognizer = Recognizer.load(args.model, device=args.device, options=decoding_options(args))
    streamer = recognizer.streamer(**stream_options(args))
    rate, microphone = recognizer.sample_rate, None
    if args.input == "-":
        blocks = stdin_blocks(args.rate or rate, rate)
    elif args.input:
        blocks = file_blocks(args.input, rate, realtime=not args.no_realtime)
    else:
        microphone = Microphone(rate, input_device)
        blocks = microphone.blocks()
        log.info("listening on %s; Ctrl-C stops", microphone.name)
    show = print_json_event if args.json else EventLine(sys.stdout)
    try:
        for block in blocks:
            for event in streamer.accept(block):
                show(event)
    except KeyboardInterrupt:
        pass  # the words heard so far are still committed below
    for event in streamer.finish():
        show(event)
    if microphone is not None and microphone.overflows:
        log.warning("%d input overflows: the recognizer fell behind and audio was dropped", microphone.overflows)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from asr.server import Limits, Server, serve
    from asr.transcribe import Recognizer

    limits = Limits(args.max_streams, args.max_message_kb * 1024, args.max_stream_seconds,
                    int(args.max_upload_mb * 2**20), args.idle_seconds)
    if min(limits.max_streams, limits.max_message_bytes, limits.max_stream_seconds, limits.max_upload_bytes,
           limits.idle_seconds) <= 0:
        raise AsrError("--max-streams, --max-message-kb, --max-stream-seconds, --max-upload-mb and --idle-seconds "
                       "must be positive")
    recognizer = Recognizer.load(args.model, device=args.device, options=decoding_options(args))
    options = stream_options(args)
    recognizer.streamer(**options)  # a bad option fails here, not in the first client's stream
    token = args.token or os.environ.get("ASR_SERVE_TOKEN") or None
    serve(Server(recognizer, limits, token, tuple(args.allow_origin), options), args.host, args.port)
    return 0


def stream_options(args: argparse.Namespace) -> dict:
    return dict(chunk_ms=args.chunk_ms, right_context_ms=args.right_context_ms,
                endpoint_silence_ms=args.endpoint_silence_ms, max_segment_s=args.max_segment,
                final_pass=args.final_pass, trim_db=args.trim_db, speaker_norm=args.speaker_norm, adapt=args.adapt)


COMPUTE_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def stream_input_device(args: argparse.Namespace) -> str | None:
    """The microphone: ``--input-device``, or, spelled the old way, a ``--device`` that names no
    compute device (``--device`` meant the microphone in ``asr stream`` in asr 0.1; now it is the
    compute device, as in every other command). ``--model-device`` was the compute device."""
    if args.model_device is not None:
        log.warning("asr stream --model-device is now --device (the old spelling goes in the next release)")
        args.device = args.model_device
        return args.input_device
    if args.device is not None and not COMPUTE_DEVICE.fullmatch(args.device):
        log.warning("asr stream --device %s: the microphone is now --input-device (read as that for now; "
                    "--device is the compute device, as in every other command)", args.device)
        args.input_device, args.device = args.input_device or args.device, "auto"
    return args.input_device


def print_json_event(event) -> None:
    print(json.dumps(event.as_dict(), ensure_ascii=False), flush=True)


class EventLine:
    """Partial results rewrite one terminal line in place; finals end it. Off a terminal only the
    finals are written, one per line."""

    def __init__(self, out):
        self.out, self.tty = out, out.isatty()

    def __call__(self, event) -> None:
        if event.type == "partial" and not self.tty:
            return
        prefix = "\r\x1b[K" if self.tty else ""
        self.out.write(prefix + event.text + ("\n" if event.type == "final" else ""))
        self.out.flush()


def speaker_options(args: argparse.Namespace) -> dict:
    """--speaker-norm, --pool-seconds, --adapt and --adapt-rounds as Recognizer.recognize's arguments."""
    return dict(speaker_norm=args.speaker_norm, pool_seconds=args.pool_seconds,
                adapt=args.adapt_rounds if args.adapt else 0)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from asr.transcribe import Recognizer

    recognizer = Recognizer.load(args.model, device=args.device, options=decoding_options(args))
    rates = recognizer.evaluate(args.manifest, skip_bad=args.skip_bad, **speaker_options(args))
    if args.report:
        rates.write_report(args.report)
        log.info("per-utterance errors: %s", args.report)
    words = sum(u.words for u in rates.utterances)
    print(f"{Path(args.manifest).name}: {len(rates.utterances)} utterances, {words} words")
    if rates.skipped:
        print(f"skipped {len(rates.skipped)} bad lines or utterances (left out of the rates; warnings above)")
    speakers = rates.by_speaker()
    for speaker, own in speakers.items() if len(speakers) > 1 else ():
        print(f"speaker {speaker}: {len(own.utterances)} utterances, {own.summary()}")
    print(rates.summary())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from asr.export import export_onnx

    if not args.output.endswith(".onnx"):
        raise AsrError(f"{args.output}: the exported model's name must end in .onnx")
    print(export_onnx(args.model, args.output, int8=args.int8))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from asr.corpora import prepare_corpus

    options = {
        "seed": args.seed,
        "size": args.size,
        "download": args.download,
        "subsets": args.subsets.split(",") if args.subsets else None,
        "language": args.language,
        "splits": tuple(args.splits.split(",")) if args.splits else None,
    }
    for name, path in prepare_corpus(args.corpus, args.data_dir, args.out_dir, **options).items():
        print(f"{name}\t{path}")
    return 0


def cmd_lm_build(args: argparse.Namespace) -> int:
    from asr.ngram import build_arpa, read_lm_text
    from asr.tokenizer import TextNormalization

    normalize = TextNormalization()
    if args.model:
        from asr.checkpoint import load_checkpoint
        from asr.tokenizer import tokenizer_from_dict

        normalize = tokenizer_from_dict(load_checkpoint(args.model)["tokenizer"]).normalize
    texts = [t for path in args.text for t in read_lm_text(path)]
    print(build_arpa(texts, args.order, args.output, normalize))
    return 0


def cmd_lm_train(args: argparse.Namespace) -> int:
    from asr.charlm import CharLMConfig, CharLMTraining, save_charlm, train_charlm
    from asr.checkpoint import load_checkpoint
    from asr.ngram import read_lm_text
    from asr.tokenizer import tokenizer_from_dict

    tokenizer = tokenizer_from_dict(load_checkpoint(args.model)["tokenizer"])
    texts = [t for path in args.text for t in read_lm_text(path)]
    cfg = CharLMConfig(hidden_size=args.hidden_size, num_layers=args.num_layers)
    training = CharLMTraining(epochs=args.epochs)
    if args.epochs < 1 or args.hidden_size < 1 or args.num_layers < 1:
        raise AsrError("--epochs, --hidden-size and --num-layers must be positive")
    model, figures = train_charlm(texts, tokenizer, cfg, training)
    path = save_charlm(model, tokenizer, args.output, figures)
    print(f"dev perplexity {figures['dev_perplexity']:.3f}, {figures['dev_bits_per_char']:.3f} bits per character")
    print(path)
    return 0


def cmd_lm_tune(args: argparse.Namespace) -> int:
    from asr.decoding import DecodeMethod, DecodingOptions
    from asr.tuning import save_tuned, tune_lm
    from asr.transcribe import Recognizer

    options = DecodingOptions(method=DecodeMethod.beam, beam_size=args.beam_size, lm=args.lm, lexicon=args.lexicon)
    options.validate()
    recognizer = Recognizer.load(args.model, device=args.device)
    trials = tune_lm(recognizer, args.manifest, args.lm, args.lm_weights, args.word_scores, options)
    for t in trials[: args.show]:
        print(f"lm_weight {t.lm_weight:g} word_score {t.word_score:g}: WER {t.wer:.2f} CER {t.cer:.2f}")
    path = save_tuned(args.lm, trials[0], args.manifest)
    print(f"best: lm_weight {trials[0].lm_weight:g} word_score {trials[0].word_score:g} -> {path}")
    return 0


COMMANDS = {"train": cmd_train, "transcribe": cmd_transcribe, "stream": cmd_stream, "serve": cmd_serve,
            "evaluate": cmd_evaluate, "export": cmd_export, "prepare": cmd_prepare, "lm_build": cmd_lm_build,
            "lm_train": cmd_lm_train, "lm_tune": cmd_lm_tune}


def main(argv: list[str] | None = None) -> int:
    if importlib.util.find_spec("torch") is None:  # pip install asr[onnx]: the runtime of exported models
        from asr.deploy import main as deploy_main

        return deploy_main(argv)
    args = build_parser().parse_args(join_list_values(sys.argv[1:] if argv is None else argv))
    handler = COMMANDS[args.handler]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s" if args.verbose else "%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return handler(args)
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
