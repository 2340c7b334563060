"""The ``asr`` command as a user runs it: subprocesses, real files, exit codes, one-line errors."""

import json

import pytest

from conftest import run_cli, write_audio


@pytest.mark.parametrize("command", [[], ["train"], ["transcribe"], ["evaluate"], ["prepare"]])
def test_help_explains_every_command(command):
    done = run_cli(*command, "--help")
    assert done.returncode == 0 and "usage: asr" in done.stdout


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
