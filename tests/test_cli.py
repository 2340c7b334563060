"""The ``asr`` command as a user runs it: subprocesses, real files, exit codes, one-line errors."""

import json

import pytest

from conftest import run_cli, write_audio


DECODING_OPTIONS = ["--decode", "--beam-size", "--beam-threshold", "--lm", "--lexicon", "--lm-weight", "--word-score",
                    "--nbest"]

# each command: the options it really takes, and phrases of its own description and help texts
HELP = {
    "": (["--version", "--verbose", "train", "transcribe", "stream", "evaluate", "prepare", "lm"],
         ["train a model from a hydra config", "transcribe audio files", "live transcription from the microphone",
          "score a model on a manifest", "prepare a corpus into manifests", "language models for beam search"]),
    "train": (["--config-name", "--config-dir", "overrides"],
              ["Extra arguments are hydra overrides", "<trainer.output_dir>/model.pt"]),
    "transcribe": (["model", "audio", "--format", "--output-dir", "--device", *DECODING_OPTIONS],
                   ["{txt,json,srt,vtt,tsv}", "audio files, folders of audio files, or JSON-lines manifests",
                    "one <name>.<format> file per input"]),
    "stream": (["model", "--input-device", "--list-devices", "--input", "--rate", "--no-realtime", "--json",
                "--chunk-ms", "--right-context-ms", "--endpoint-silence-ms", "--max-segment", "--final-pass",
                "--device", *DECODING_OPTIONS],
               ["partial results update one line", "a pause this long ends a final result", "{full,chunked}",
                "raw 16-bit little-endian mono PCM on stdin"]),
    "evaluate": (["model", "manifest", "--report", "--skip-bad", "--device", *DECODING_OPTIONS],
                 ["the last line is 'WER <x> CER <y>'", "per-utterance reference/hypothesis/errors"]),
    "prepare": (["corpus", "out_dir", "--data-dir", "--download", "--subsets", "--language", "--splits", "--size",
                 "--seed"],
                ["synth", "yesno", "fsdd", "librispeech", "commonvoice", "Write train/dev/test manifests"]),
    "lm": (["build", "train", "tune"],
           ["build a word n-gram LM (ARPA, modified Kneser-Ney)", "train a character LSTM LM",
            "search LM weight and word score on a dev manifest"]),
    "lm build": (["text", "-o OUTPUT, --output OUTPUT", "--order", "--model"],
                 ["interpolated modified Kneser-Ney n-gram model", "n-gram order (default 3)"]),
    "lm train": (["text", "--model", "-o OUTPUT, --output OUTPUT", "--epochs", "--hidden-size", "--num-layers"],
                 ["token-level LSTM language model", "perplexity and bits per character",
                  "lexicon-free beam search with shallow fusion"]),
    "lm tune": (["model", "manifest", "--lm", "--lexicon", "--lm-weights", "--word-scores", "--beam-size", "--show",
                 "--device"],
                ["writes the best to <LM>.params.json", "comma-separated alphas"]),
}


def help_text(command: str) -> str:
    done = run_cli(*command.split(), "--help")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"usage: asr {command}".rstrip() + " ")
    return done.stdout


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c or "asr")
def test_help_explains_every_command(command):
    text = help_text(command)
    flat = " ".join(text.split())  # help paragraphs wrap at the terminal's width
    options, phrases = HELP[command]
    words = set(flat.replace("[", " ").replace("]", " ").replace("{", " ").replace(",", " ").split())
    missing = [o for o in options if (o not in words if " " not in o else o not in flat)]
    assert not missing, text
    assert not [p for p in phrases if p not in flat], text


def test_lm_train_help_says_how_much_is_held_out():
    assert "5% is held out" in " ".join(help_text("lm train").split())


def test_transcribe_prints_one_line_per_file(trained_tiny):
    model_path, manifest, rates = trained_tiny
    first = json.loads(manifest.read_text().splitlines()[0])
    audio = str(manifest.parent / first["audio_filepath"]) if not first["audio_filepath"].startswith("/") else first["audio_filepath"]
    done = run_cli("transcribe", str(model_path), audio)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == rates.utterances[0].hypothesis
    done = run_cli("transcribe", str(model_path), audio, audio, "--format", "json")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2 and lines[0]["text"] == rates.utterances[0].hypothesis and lines[0]["duration"] > 1


def test_evaluate_ends_with_the_wer_cer_line(trained_tiny, tmp_path):
    model_path, manifest, rates = trained_tiny
    done = run_cli("evaluate", str(model_path), str(manifest), "--report", str(tmp_path / "errors.jsonl"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == rates.summary()
    assert len((tmp_path / "errors.jsonl").read_text().splitlines()) == len(rates.utterances)


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("asr: error:")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_missing_model_and_missing_audio(trained_tiny, tmp_path):
    model_path = trained_tiny[0]
    assert_one_line_error(run_cli("transcribe", str(tmp_path / "none.pt"), "x.wav"), "none.pt", "not found")
    assert_one_line_error(run_cli("transcribe", str(model_path), str(tmp_path / "gone.wav")), "gone.wav", "not found")


def test_corrupt_and_empty_audio(trained_tiny, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("hello")
    for name in ("empty.wav", "text.wav"):
        assert_one_line_error(run_cli("transcribe", str(trained_tiny[0]), str(tmp_path / name)), name, "cannot read audio")


def test_broken_manifest_names_file_and_line(trained_tiny, tmp_path):
    write_audio(tmp_path / "a.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "yes"}\n{"audio_filepath": "a.wav"\n')
    assert_one_line_error(run_cli("evaluate", str(trained_tiny[0]), str(manifest)), f"{manifest}:2:", "invalid JSON")


def test_bad_config_override_is_one_line(tmp_path):
    done = run_cli("train", "data.train_manifest=a", "data.dev_manifest=b", "model.hidden_size=0")
    assert_one_line_error(done, "model.hidden_size=0: must be > 0")
    done = run_cli("train", "data.train_manifest=a", "data.dev_manifest=b", "model.nope=1")
    assert_one_line_error(done, "model.nope")


def test_missing_manifest_in_train(tmp_path):
    done = run_cli("train", f"data.train_manifest={tmp_path}/none.jsonl", f"data.dev_manifest={tmp_path}/none.jsonl",
                   f"trainer.output_dir={tmp_path}/exp")
    assert_one_line_error(done, "none.jsonl", "manifest not found")


def test_verbose_flag_shows_the_traceback(tmp_path):
    done = run_cli("-v", "transcribe", str(tmp_path / "none.pt"), "x.wav")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_a_folder_gives_one_transcript_per_audio_file_in_sorted_order(trained_tiny, tmp_path):
    """A folder with nested audio of four formats and rates (and files that are not audio): one
    transcript per audio file, sorted by path, each the words of its own recording; with
    --output-dir one file each, names kept apart where two files share a stem."""
    import numpy as np
    import soundfile as sf
    import torch

    from asr.audio import resample
    from asr.scoring import score

    model_path, manifest, rates = trained_tiny
    recordings = [rates.utterances[i] for i in (0, 2, 4, 6)]  # four different yes/no strings
    folder = tmp_path / "in"
    layout = [  # relative path, rate, channels, soundfile options
        ("a.wav", 8000, 1, {}),
        ("b/deep/x.flac", 16000, 1, {}),
        ("b/x.sph", 22050, 1, {"format": "NIST", "subtype": "PCM_16"}),
        ("c/z.aiff", 44100, 2, {"format": "AIFF", "subtype": "PCM_24"}),
    ]
    for (name, rate, channels, options), utt in zip(layout, recordings):
        samples, own_rate = sf.read(utt.key, dtype="float32")
        samples = resample(torch.from_numpy(samples), own_rate, rate).numpy()
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, np.stack([samples] * channels, axis=1), rate, **options)
    (folder / "notes.txt").write_text("not audio\n")
    (folder / "c" / "cover.png").write_bytes(b"\x89PNG\r\n")
    paths = [str(folder / name) for name, *_ in layout]

    done = run_cli("transcribe", str(model_path), str(folder))
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [path for path, _ in lines] == paths  # every audio file once, in sorted order, nothing else
    for (_, text), utt in zip(lines, recordings):  # each file's own words (a mix-up gives 25 % or more)
        assert score([utt.reference], [text]).wer <= 12.5, (utt.reference, text)

    out = tmp_path / "out"
    done = run_cli("transcribe", str(model_path), str(folder), "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert written == {name: text + "\n" for name, (_, text) in zip(["a.txt", "deep_x.txt", "b_x.txt", "z.txt"], lines)}


def test_negative_word_scores_are_read_as_numbers(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    done = run_cli("lm", "tune", str(tmp_path / "none.pt"), str(manifest), "--lm", str(tmp_path / "lm.arpa"),
                   "--word-scores", "-1,0,1")
    # the arguments parse; what stops it is the missing model or LM, as one error line
    assert_one_line_error(done)
    assert "expected one argument" not in done.stderr
