"""``asr <command>``: parse arguments, call the library, map user errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
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
    if os.environ.get("RANK", "0") == "0":  # under torchrun, once for the run
        print(model_path)
    return 0


def decoding_options(args: argparse.Namespace):
    from asr.decoding import DecodeMethod, DecodingOptions

    method = args.decode or ("beam" if (args.lm or args.lexicon) else "greedy")
    defaults = DecodingOptions()
    lm_weight, word_score = args.lm_weight, args.word_score
    if args.lm and (lm_weight is None or word_score is None):
        from asr.tuning import params_path, tuned_params

        tuned = tuned_params(args.lm) or {}
        if tuned:
            log.info("LM weights from %s: %s", params_path(args.lm), tuned)
        lm_weight = lm_weight if lm_weight is not None else tuned.get("lm_weight", defaults.lm_weight)
        word_score = word_score if word_score is not None else tuned.get("word_score", defaults.word_score)
    return DecodingOptions(
        method=DecodeMethod(method),
        beam_size=args.beam_size,
        beam_size_token=args.beam_size_token,
        beam_threshold=args.beam_threshold,
        lm=args.lm,
        lexicon=args.lexicon,
        lm_weight=lm_weight if lm_weight is not None else defaults.lm_weight,
        word_score=word_score if word_score is not None else defaults.word_score,
        nbest=args.nbest,
        blank_skip=None if args.blank_skip == 0 else args.blank_skip,
        token_min_logp=None if args.token_min_logp == 0 else args.token_min_logp,
    )


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    from asr.decoding import DecodingOptions

    d = DecodingOptions()
    g = p.add_argument_group("decoding")
    g.add_argument("--decode", choices=["greedy", "beam"], default=None,
                   help="greedy (default) or beam search (default when --lm or --lexicon is given)")
    g.add_argument("--beam-size", type=int, default=d.beam_size, help=f"hypotheses kept per frame (default {d.beam_size})")
    g.add_argument("--beam-size-token", type=int, default=None, help="tokens tried per frame (default: all)")
    g.add_argument("--beam-threshold", type=float, default=d.beam_threshold,
                   help=f"prune hypotheses scoring this far below the best (default {d.beam_threshold})")
    g.add_argument("--blank-skip", type=float, default=d.blank_skip, metavar="P",
                   help="beam search visits only the first of consecutive frames whose blank probability exceeds "
                   f"P (default {d.blank_skip}; 0: visit every frame)")
    g.add_argument("--token-min-logp", type=float, default=d.token_min_logp, metavar="L",
                   help="beam search does not try tokens below log-probability L at a frame (the best always is; "
                   f"default {d.token_min_logp}; 0: try all)")
    g.add_argument("--lm", help="a KenLM word n-gram model (ARPA or binary, e.g. from 'asr lm build'; decoding is "
                   "then restricted to its words) or a character LM from 'asr lm train' (lexicon-free)")
    g.add_argument("--lexicon", help="words allowed in the output, one per line (the first field; spellings are "
                   "taken from the model's tokenizer); default with an n-gram --lm: the LM's words")
    g.add_argument("--lm-weight", type=float, default=None,
                   help=f"LM weight alpha (default: from 'asr lm tune' for this LM, else {d.lm_weight})")
    g.add_argument("--word-score", type=float, default=None,
                   help=f"word insertion score beta (default: from 'asr lm tune' for this LM, else {d.word_score})")
    g.add_argument("--nbest", type=int, default=1, help="hypotheses per file (beam search; json output)")


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.outputs import OutputFormat, TranscriptWriter
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
        print(f"asr: warning: {reason}; skipped", file=sys.stderr)
    total, unreadable = len(utts) + len(failed), len(failed)
    writer, interrupted = TranscriptWriter(utts, fmt, args.output_dir), False
    try:
        for index, transcript in recognizer.recognize(utts, timestamps=fmt is not OutputFormat.txt):
            if transcript.error is None:
                writer.finished(index, transcript)
            elif total == 1:
                raise AsrError(transcript.error)
            else:
                failed.append((transcript.key, transcript.error))
                print(f"asr: warning: {transcript.error}; skipped", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True  # what finished is still written below
    writer.close()
    if failed or interrupted:
        missing = len(utts) - len(writer.done) - (len(failed) - unreadable)
        print(f"asr: transcribed {len(writer.done)} of {total} inputs; {len(failed)} failed"
              + (f", {missing} not transcribed (interrupted)" if interrupted else ""), file=sys.stderr)
    return 130 if interrupted else (1 if failed else 0)


def cmd_stream(args: argparse.Namespace) -> int:
    from asr.sources import Microphone, file_blocks, list_devices, stdin_blocks
    from asr.stream import StreamingRecognizer, model_stream_options
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
    options = model_stream_options(recognizer, chunk_ms=args.chunk_ms, right_context_ms=args.right_context_ms,
                                   endpoint_silence_ms=args.endpoint_silence_ms, max_segment_s=args.max_segment,
                                   final_pass=args.final_pass)
    streamer = StreamingRecognizer(recognizer, options)
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from asr.transcribe import Recognizer

    recognizer = Recognizer.load(args.model, device=args.device, options=decoding_options(args))
    rates = recognizer.evaluate(args.manifest, skip_bad=args.skip_bad)
    if args.report:
        rates.write_report(args.report)
        log.info("per-utterance errors: %s", args.report)
    words = sum(u.words for u in rates.utterances)
    print(f"{Path(args.manifest).name}: {len(rates.utterances)} utterances, {words} words")
    if rates.skipped:
        print(f"skipped {len(rates.skipped)} bad lines or utterances (left out of the rates; warnings above)")
    print(rates.summary())
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


def float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None


def build_parser() -> argparse.ArgumentParser:
    from asr.corpora import PREPARERS
    from asr.decoding import DecodingOptions
    from asr.stream import StreamOptions

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
    p.add_argument("audio", nargs="+", help="audio files, folders of audio files, or JSON-lines manifests")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt", "tsv"], default="txt",
                   help="txt: the text (path<TAB>text for several inputs); json: one object per input with "
                   "segments and words (times, confidences) and n-best when --nbest > 1; srt/vtt: subtitles; "
                   "tsv: start/end (ms) and text per segment")
    p.add_argument("--output-dir", help="write one <name>.<format> file per input here instead of printing")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_decoding_arguments(p)
    p.set_defaults(func=cmd_transcribe)

    so = StreamOptions()
    p = sub.add_parser("stream", help="live transcription from the microphone, a file or stdin",
                       description="Transcribe as audio arrives: partial results update one line, each final result "
                       "(at a pause) gets its own line; --json prints one event object per line instead.")
    p.add_argument("model", nargs="?", help="model.pt written by 'asr train'")
    p.add_argument("--input-device", help="microphone: input device index or name (see --list-devices; default: "
                   "the system's)")
    p.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p.add_argument("--input", help="a FILE fed at real-time pace instead of the microphone, or - for raw 16-bit "
                   "little-endian mono PCM on stdin (at --rate)")
    p.add_argument("--rate", type=int, help="sample rate of stdin PCM (default: the model's)")
    p.add_argument("--no-realtime", action="store_true", help="feed --input FILE as fast as it is processed")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per event: {"type": "partial"|"final", "text", "start", "end"}')
    p.add_argument("--chunk-ms", type=float, help="audio per model step (default: what a chunk-aware model was "
                   f"trained with, else {so.chunk_ms:g})")
    p.add_argument("--right-context-ms", type=float, help="look-ahead of a bidirectional model's backward direction "
                   f"(default: what a chunk-aware model was trained with, else {so.right_context_ms:g})")
    p.add_argument("--endpoint-silence-ms", type=float, default=so.endpoint_silence_ms,
                   help=f"a pause this long ends a final result (default {so.endpoint_silence_ms:g})")
    p.add_argument("--max-segment", type=float, default=so.max_segment_s,
                   help=f"seconds after which a result is final anyway (default {so.max_segment_s:g})")
    p.add_argument("--final-pass", choices=["full", "chunked"], default=so.final_pass,
                   help="full (default): each final result re-runs the whole bidirectional model over its segment; "
                   "chunked: finals from the same chunked outputs as the partials")
    p.add_argument("--device", default="auto", help="where the model runs: auto, cpu, cuda or cuda:N (as for the "
                   "other commands; a microphone name here is still read as --input-device, with a warning)")
    p.add_argument("--model-device", help=argparse.SUPPRESS)  # the old spelling of --device
    add_decoding_arguments(p)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("evaluate", help="score a model on a manifest",
                       description="Decode a manifest and print WER/CER; the last line is 'WER <x> CER <y>' (percent).")
    p.add_argument("model")
    p.add_argument("manifest", help="JSON-lines manifest with audio_filepath, duration, text")
    p.add_argument("--report", help="write per-utterance reference/hypothesis/errors (JSON lines) here")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad manifest lines and unreadable audio with a warning (counted) instead of stopping")
    p.add_argument("--device", default="auto")
    add_decoding_arguments(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("prepare", help="prepare a corpus into manifests",
                       description="Write train/dev/test manifests for a corpus under OUT_DIR.")
    p.add_argument("corpus", choices=list(PREPARERS))
    p.add_argument("out_dir")
    p.add_argument("--data-dir", help="the corpus's local copy (its layout: recipes/<corpus>/README.md)")
    p.add_argument("--download", action="store_true",
                   help="download (and checksum) the corpus into --data-dir where it is missing; needs a network")
    p.add_argument("--subsets", help="librispeech: comma-separated subsets (default "
                   "train-clean-100,dev-clean,test-clean,test-other; train-960 = all training subsets)")
    p.add_argument("--language", help="commonvoice: language code for text normalization (default: the tsv's locale)")
    p.add_argument("--splits", help="commonvoice: comma-separated tsv names (default train,dev,test)")
    p.add_argument("--size", type=int, default=None, help="synth: utterances to generate; fsdd: connected training strings (default 2000)")
    p.add_argument("--seed", type=int, default=None, help="synth, fsdd: seed of generated material")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("lm", help="language models for beam search",
                       description="Build, train and tune language models for 'transcribe/evaluate --lm'.")
    lm = p.add_subparsers(dest="lm_command", required=True, metavar="LM_COMMAND")
    b = lm.add_parser("build", help="build a word n-gram LM (ARPA, modified Kneser-Ney)",
                      description="Estimate an interpolated modified Kneser-Ney n-gram model from text and write "
                      "it as ARPA, loadable by 'asr transcribe --lm'. TEXT is a text file (one sentence per line) "
                      "or a JSON-lines manifest (its 'text' fields).")
    b.add_argument("text", nargs="+", help="text files or manifests")
    b.add_argument("-o", "--output", required=True, help="ARPA file to write")
    b.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    b.add_argument("--model", help="normalize the text as this model's tokenizer does (default: lower-case, "
                   "no punctuation but apostrophes)")
    b.set_defaults(func=cmd_lm_build)

    c = lm.add_parser("train", help="train a character LSTM LM for beam-search fusion",
                      description="Train a token-level LSTM language model over MODEL's tokenizer on TEXT (text "
                      "files or manifests); 5%% is held out to report perplexity and bits per character. Use it "
                      "with 'asr transcribe --lm charlm.pt' (lexicon-free beam search with shallow fusion).")
    c.add_argument("text", nargs="+", help="text files or manifests")
    c.add_argument("--model", required=True, help="the acoustic model whose tokens the LM predicts")
    c.add_argument("-o", "--output", required=True, help="checkpoint to write, e.g. charlm.pt")
    c.add_argument("--epochs", type=int, default=10)
    c.add_argument("--hidden-size", type=int, default=256)
    c.add_argument("--num-layers", type=int, default=1)
    c.set_defaults(func=cmd_lm_train)

    t = lm.add_parser("tune", help="search LM weight and word score on a dev manifest",
                      description="Run the acoustic model once over MANIFEST, then beam-decode it with every "
                      "(lm weight, word score) pair; writes the best to <LM>.params.json, which transcribe and "
                      "evaluate use for this LM unless --lm-weight/--word-score are given.")
    t.add_argument("model")
    t.add_argument("manifest")
    t.add_argument("--lm", required=True, help="the ARPA or binary KenLM model (or character LM) to tune")
    t.add_argument("--lexicon", help="words allowed in the output, one per line (needed with a binary KenLM "
                   "model, whose words cannot be read from it; default with an ARPA LM: its words)")
    t.add_argument("--lm-weights", type=float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
                   help="comma-separated alphas (default 0,0.25,0.5,0.75,1,1.5,2)")
    t.add_argument("--word-scores", type=float_list, default=[-1.0, 0.0, 1.0, 2.0],
                   help="comma-separated betas (default -1,0,1,2)")
    t.add_argument("--beam-size", type=int, default=DecodingOptions().beam_size)
    t.add_argument("--show", type=int, default=5, help="print this many best trials")
    t.add_argument("--device", default="auto")
    t.set_defaults(func=cmd_lm_tune)
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
