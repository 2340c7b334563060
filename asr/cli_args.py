"""The command line of ``asr``: every command's arguments and help (the handlers are in :mod:`asr.cli`)."""

from __future__ import annotations

import argparse

from asr import __version__


MODEL_HELP = "model.pt written by 'asr train', or model.onnx written by 'asr export'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="Bidirectional-LSTM CTC speech recognition.")
    parser.add_argument("--version", action="version", version=f"asr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_train, add_transcribe, add_stream, add_serve, add_evaluate, add_export, add_prepare, add_lm):
        add(sub)
    return parser


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a hydra config",
                       description="Train a model. Extra arguments are hydra overrides, e.g. "
                       "data.train_manifest=train.jsonl model.hidden_size=320 trainer.output_dir=exp/run1. "
                       "Leaves <trainer.output_dir>/model.pt and prints its path.")
    p.add_argument("--config-name", default="config", help="config in the config dir (default: config)")
    p.add_argument("--config-dir", default=None, help="config directory (default: the project's conf/)")
    p.add_argument("overrides", nargs="*", help="hydra overrides key=value")
    p.set_defaults(handler="train")


def add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files", description="Transcribe audio files of any "
                       "format libsndfile reads (wav, flac, ogg, mp3, sphere) at any sample rate.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("audio", nargs="+", help="audio files, folders of audio files, or JSON-lines manifests")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt", "tsv"], default="txt",
                   help="txt: the text (path<TAB>text for several inputs); json: one object per input with "
                   "segments and words (times, confidences) and n-best when --nbest > 1; srt/vtt: subtitles; "
                   "tsv: start/end (ms) and text per segment")
    p.add_argument("--output-dir", help="write one <name>.<format> file per input here instead of printing")
    add_speaker_norm_arguments(p, "the inputs are one speaker, unless a manifest's 'speaker' fields say otherwise")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_decoding_arguments(p)
    p.set_defaults(handler="transcribe")


def add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="live transcription from the microphone, a file or stdin",
                       description="Transcribe as audio arrives: partial results update one line, each final result "
                       "(at a pause) gets its own line; --json prints one event object per line instead.")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--input-device", help="microphone: input device index or name (see --list-devices; default: "
                   "the system's)")
    p.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p.add_argument("--input", help="a FILE fed at real-time pace instead of the microphone, or - for raw 16-bit "
                   "little-endian mono PCM on stdin (at --rate)")
    p.add_argument("--rate", type=int, help="sample rate of stdin PCM (default: the model's)")
    p.add_argument("--no-realtime", action="store_true", help="feed --input FILE as fast as it is processed")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per event: {"type": "partial"|"final", "text", "start", "end"}')
    add_stream_options(p)
    p.add_argument("--device", default="auto", help="where the model runs: auto, cpu, cuda or cuda:N (as for the "
                   "other commands; a microphone name here is still read as --input-device, with a warning)")
    p.add_argument("--model-device", help=argparse.SUPPRESS)  # the old spelling of --device
    add_decoding_arguments(p)
    p.set_defaults(handler="stream")


def add_stream_options(p: argparse.ArgumentParser) -> None:
    from asr.stream import StreamOptions

    so = StreamOptions()
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
    p.add_argument("--trim-db", type=float, default=so.trim_db,
                   help="each finished segment is cut from its first to its last frame within this many dB of its "
                   "loudest, as training cuts utterances, for the full final pass and the speaker's statistics; "
                   f"0 keeps the whole segment (default {so.trim_db:g})")
    p.add_argument("--speaker-norm", action="store_true",
                   help="one speaker throughout (per stream): normalize each segment with the statistics of all the "
                   "speech so far, not its own alone (models with per-utterance normalization)")
    p.add_argument("--adapt", action="store_true",
                   help="one speaker throughout (per stream): after each final result, fit a feature scale and "
                   "shift to the final transcripts so far; the segments that follow use them (models with "
                   "per-utterance normalization; PyTorch checkpoints)")


def add_serve(sub: argparse._SubParsersAction) -> None:
    from asr.server import Limits

    limits = Limits()
    p = sub.add_parser("serve", help="a transcription server: WebSocket streaming, HTTP files, a browser page",
                       description="Serve a model on this machine: a page at / (microphone in the browser), "
                       "WebSocket /stream (docs/SERVER.md), POST /transcribe (multipart field 'audio'), GET /health.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or ?token= on the page and the "
                   "WebSocket); default: the ASR_SERVE_TOKEN environment variable, else none")
    p.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                   help="a web origin allowed besides the server's own page (repeatable)")
    p.add_argument("--max-streams", type=int, default=limits.max_streams, help="concurrent WebSocket streams")
    p.add_argument("--max-stream-seconds", type=float, default=limits.max_stream_seconds,
                   help="audio per stream (its words so far are sent, then it is closed)")
    p.add_argument("--max-message-kb", type=int, default=limits.max_message_bytes // 1024,
                   help="largest WebSocket message")
    p.add_argument("--max-upload-mb", type=float, default=limits.max_upload_bytes / 2**20,
                   help="largest POST /transcribe upload")
    p.add_argument("--idle-seconds", type=float, default=limits.idle_seconds,
                   help="a stream that sends nothing this long is closed")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_stream_options(p)
    add_decoding_arguments(p)
    p.set_defaults(handler="serve")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model on a manifest",
                       description="Decode a manifest and print WER/CER; the last line is 'WER <x> CER <y>' (percent).")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("manifest", help="JSON-lines manifest with audio_filepath, duration, text")
    p.add_argument("--report", help="write per-utterance reference/hypothesis/errors (JSON lines) here")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad manifest lines and unreadable audio with a warning (counted) instead of stopping")
    add_speaker_norm_arguments(p, "the utterances with its 'speaker' field")
    p.add_argument("--device", default="auto")
    add_decoding_arguments(p)
    p.set_defaults(handler="evaluate")


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (runs without PyTorch)",
                       description="Write a trained model as one ONNX file (features -> log-probabilities, dynamic "
                       "batch and time axes) with its tokenizer and front end in the file's metadata. "
                       "'asr transcribe', 'asr evaluate' and 'asr stream' take the .onnx file in place of model.pt.")
    p.add_argument("model", help="model.pt written by 'asr train'")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true", help="int8 weights for the recurrent and linear layers "
                   "(onnxruntime dynamic quantization: about 4x smaller and faster on CPUs)")
    p.set_defaults(handler="export")


def add_prepare(sub: argparse._SubParsersAction) -> None:
    from asr.corpora import PREPARERS

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
    p.set_defaults(handler="prepare")


def add_lm(sub: argparse._SubParsersAction) -> None:
    from asr.decoding import DecodingOptions

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
    b.set_defaults(handler="lm_build")

    c = lm.add_parser("train", help="train a character LSTM LM for beam-search fusion",
                      description="Train a token-level LSTM language model over MODEL's tokenizer on TEXT (text "
                      "files or manifests); 5% is held out to report perplexity and bits per character. Use it "
                      "with 'asr transcribe --lm charlm.pt' (lexicon-free beam search with shallow fusion).")
    c.add_argument("text", nargs="+", help="text files or manifests")
    c.add_argument("--model", required=True, help="the acoustic model whose tokens the LM predicts")
    c.add_argument("-o", "--output", required=True, help="checkpoint to write, e.g. charlm.pt")
    c.add_argument("--epochs", type=int, default=10)
    c.add_argument("--hidden-size", type=int, default=256)
    c.add_argument("--num-layers", type=int, default=1)
    c.set_defaults(handler="lm_train")

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
    t.set_defaults(handler="lm_tune")


def add_speaker_norm_arguments(p: argparse.ArgumentParser, labels: str) -> None:
    """--speaker-norm [labels|nearest], --pool-seconds, --adapt and --adapt-rounds; ``labels`` says whose
    utterances share statistics under ``labels``."""
    from asr.adaptation import AdaptOptions
    from asr.speaker_norm import POOL_SECONDS

    p.add_argument("--speaker-norm", nargs="?", const="labels", choices=["labels", "nearest"],
                   help="normalize each utterance with statistics pooled over its speaker's, not its own alone "
                   f"(models with per-utterance normalization). labels (the default): {labels}; nearest: no labels, "
                   "the utterances nearest to it in voice, --pool-seconds of audio in all")
    p.add_argument("--pool-seconds", type=float, default=POOL_SECONDS, metavar="S",
                   help="with --speaker-norm nearest: the audio each utterance's pool holds (default %(default)g)")
    p.add_argument("--adapt", action="store_true",
                   help="two-pass speaker adaptation (models with per-utterance normalization; PyTorch checkpoints): "
                   "transcribe, fit each speaker's feature scale and shift to those transcripts, transcribe again. "
                   "Speakers as for --speaker-norm labels; with --speaker-norm nearest, all the inputs as one")
    p.add_argument("--adapt-rounds", type=int, default=AdaptOptions().rounds, metavar="N",
                   help="with --adapt: how many times to transcribe and fit before the last pass (default %(default)s)")


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
    g.add_argument("--hotwords", metavar="FILE", help="words to favour, one 'word [boost]' a line (default boost "
                   "5, in log10 LM units); words outside the LM become possible too; needs an n-gram --lm")
    g.add_argument("--lm-weight", type=float, default=None,
                   help=f"LM weight alpha (default: from 'asr lm tune' for this LM, else {d.lm_weight})")
    g.add_argument("--word-score", type=float, default=None,
                   help=f"word insertion score beta (default: from 'asr lm tune' for this LM, else {d.word_score})")
    g.add_argument("--nbest", type=int, default=1, help="hypotheses per file (beam search; json output)")


LIST_OPTIONS = ("--lm-weights", "--word-scores")  # comma-separated numbers, which may start with "-"


def join_list_values(argv: list[str]) -> list[str]:
    """``--word-scores -1,0,1`` as ``--word-scores=-1,0,1``: argparse takes a value that starts
    with "-" and is not a plain number for an option."""
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in LIST_OPTIONS and i + 1 < len(argv):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


def float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers") from None
