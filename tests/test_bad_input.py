"""The bad-input matrix (docs/RELIABILITY.md): every case either works or gives one clear error
line naming the file (and line) or the field, exit code 2 and no traceback. Real files in real
formats, the real CLI in process."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.cli import main
from conftest import default_sigint, tone

OK = "ok"


def wav(path: Path, samples: np.ndarray, rate: int = 8000, **kwargs) -> Path:
    sf.write(path, samples, rate, **kwargs)
    return path


def speech_like(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    samples = tone(seconds, rate, channels)
    return samples[:, 0] if channels == 1 else samples


# ------------------------------------------------------------------ audio: asr transcribe MODEL FILE
def audio_case(name: str, tmp: Path) -> Path:
    path = tmp / f"{name}.wav"
    if name == "empty_file":
        path.write_bytes(b"")
    elif name == "truncated_header":
        wav(path, speech_like(1, 8000))
        path.write_bytes(path.read_bytes()[:20])
    elif name == "truncated_data":
        wav(path, speech_like(2, 8000))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # header still claims 2 s
    elif name == "text_named_wav":
        path.write_text("this is not audio\n")
    elif name == "flac_named_wav":
        sf.write(path, speech_like(1, 8000), 8000, format="FLAC")
    elif name in ("nan_samples", "inf_samples"):
        samples = speech_like(1, 8000)
        samples[100] = np.nan if name == "nan_samples" else np.inf
        wav(path, samples, subtype="FLOAT")
    elif name == "digital_silence":
        wav(path, np.zeros(8000, dtype=np.float32))
    elif name == "one_sample":
        wav(path, np.array([0.1], dtype=np.float32))
    elif name == "six_channels":
        wav(path, speech_like(1, 8000, channels=6))
    elif name in ("pcm_u8", "pcm_24", "float32"):
        wav(path, speech_like(1, 8000), subtype={"pcm_u8": "PCM_U8", "pcm_24": "PCM_24", "float32": "FLOAT"}[name])
    elif name in ("rate_4k", "rate_192k", "rate_44101", "rate_500"):
        rate = {"rate_4k": 4000, "rate_192k": 192000, "rate_44101": 44101, "rate_500": 500}[name]
        wav(path, speech_like(1, rate), rate)
    elif name == "one_hour":
        with sf.SoundFile(path, "w", 8000, 1, "PCM_16") as f:
            block = (speech_like(60, 8000) * 0.1).astype(np.float32)
            for _ in range(60):
                f.write(block)
    return path


AUDIO_CASES = {
    "empty_file": "cannot read audio",
    "truncated_header": "cannot read audio",
    "truncated_data": OK,  # what the file holds is transcribed
    "text_named_wav": "cannot read audio",
    "flac_named_wav": OK,  # the format comes from the content, not the name
    "nan_samples": "NaN or infinite samples",
    "inf_samples": "NaN or infinite samples",
    "digital_silence": OK,
    "one_sample": OK,
    "six_channels": OK,  # mixed down to mono
    "pcm_u8": OK,
    "pcm_24": OK,
    "float32": OK,
    "rate_4k": OK,  # resampled to the model's rate
    "rate_192k": OK,
    "rate_44101": OK,  # an awkward ratio: resampled with soxr, not a gigabyte polyphase kernel
    "rate_500": "sample rate 500 Hz is not audio",
    "one_hour": OK,  # transcribed in windows, in bounded memory
}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_outcome(code: int, out: str, err: str, expected: str, names: str) -> None:
    assert "Traceback" not in err
    if expected == OK:
        assert code == 0, err[-1000:]
        return
    errors = [line for line in err.splitlines() if line.startswith("asr: error:")]
    assert code == 2 and len(errors) == 1, err[-1000:]
    assert expected in errors[0] and names in errors[0], errors[0]


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_audio_matrix(trained_tiny, tmp_path, capsys, case):
    model = str(trained_tiny[0])
    path = audio_case(case, tmp_path)
    code, out, err = run(["transcribe", model, str(path), "--format", "json"], capsys)
    assert_outcome(code, out, err, AUDIO_CASES[case], path.name)
    if AUDIO_CASES[case] == OK:
        result = json.loads(out)
        assert result["duration"] == pytest.approx(sf.info(path).duration, abs=0.01)


def test_one_bad_file_does_not_stop_a_batch(trained_tiny, tmp_path, capsys):
    good = [audio_case(n, tmp_path) for n in ("digital_silence", "pcm_24", "six_channels")]
    bad = [audio_case(n, tmp_path) for n in ("text_named_wav", "nan_samples")]
    out_dir = tmp_path / "out"
    code, out, err = run(["transcribe", str(trained_tiny[0]), *map(str, good + bad), "--output-dir", str(out_dir)], capsys)
    assert code == 1 and "Traceback" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{p.stem}.txt" for p in good)
    assert "transcribed 3 of 5 inputs; 2 failed" in err
    assert all(f"{p.name}" in err for p in bad)


# ------------------------------------------------------------------ manifests: asr evaluate MODEL MANIFEST
def manifest_case(name: str, tmp: Path) -> Path:
    audio = wav(tmp / "a.wav", speech_like(1, 8000))
    good = json.dumps({"audio_filepath": str(audio), "duration": 1.0, "text": "yes"})
    bad = {
        "invalid_json": '{"audio_filepath": "a.wav", "duration": 1.0,',
        "missing_key": json.dumps({"audio_filepath": str(audio), "text": "yes"}),
        "wrong_type": json.dumps({"audio_filepath": str(audio), "duration": 1.0, "text": 5}),
        "zero_duration": json.dumps({"audio_filepath": str(audio), "duration": 0, "text": "yes"}),
        "negative_duration": json.dumps({"audio_filepath": str(audio), "duration": -1.5, "text": "yes"}),
        "missing_audio": json.dumps({"audio_filepath": str(tmp / "gone.wav"), "duration": 1.0, "text": "yes"}),
        "empty_text": json.dumps({"audio_filepath": str(audio), "duration": 1.0, "text": ""}),
        "out_of_vocabulary": json.dumps({"audio_filepath": str(audio), "duration": 1.0, "text": "jä ¿qué? 漢字"}),
    }
    path = tmp / f"{name}.jsonl"
    if name == "long_utterance":  # 50 s: over the 40 s long-audio limit, decoded in windows
        long = wav(tmp / "long.wav", speech_like(50, 8000))
        bad[name] = json.dumps({"audio_filepath": str(long), "duration": 50.0, "text": "yes no"})
    if name == "non_utf8":
        path.write_bytes(good.encode() + b"\n" + b'{"text": "\xff\xfe"}\n')
    else:
        path.write_text(good + "\n" + bad[name] + "\n")
    return path


MANIFEST_CASES = {
    "invalid_json": ":2: invalid JSON",
    "missing_key": ":2: missing key 'duration'",
    "wrong_type": ":2: 'text' must be a string",
    "zero_duration": ":2: 'duration' must be a positive number",
    "negative_duration": ":2: 'duration' must be a positive number",
    "missing_audio": ":2: audio file not found",
    "non_utf8": "not UTF-8 text",
    "empty_text": OK,  # an utterance may have no words (its words count is 0)
    "out_of_vocabulary": OK,  # scored as errors; the reference is kept as written (normalized)
    "long_utterance": OK,  # split into overlapping windows like `asr transcribe` does (bounded memory)
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_manifest_matrix(trained_tiny, tmp_path, capsys, case):
    path = manifest_case(case, tmp_path)
    code, out, err = run(["evaluate", str(trained_tiny[0]), str(path)], capsys)
    assert_outcome(code, out, err, MANIFEST_CASES[case], path.name)
    if MANIFEST_CASES[case] == OK:
        assert out.splitlines()[-1].startswith("WER ")


def test_skip_bad_evaluates_the_rest_and_counts_what_it_skipped(trained_tiny, tmp_path, capsys, caplog):
    lines = []
    for case in ("invalid_json", "missing_audio"):
        (tmp_path / case).mkdir()
        lines.append(manifest_case(case, tmp_path / case).read_text())
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(lines))
    code, out, err = run(["evaluate", str(trained_tiny[0]), str(path), "--skip-bad"], capsys)
    assert code == 0 and "2 utterances" in out and "skipped 2 bad lines" in out and out.splitlines()[-1].startswith("WER")
    assert caplog.text.count("line skipped") == 2  # one warning per bad line, naming it


# ------------------------------------------------------------------ configs: asr train OVERRIDES
CONFIG_CASES = {
    "model.hiden_size=64": "model.hiden_size: Key 'hiden_size' not in 'ModelConfig'",
    "model.hidden_size=big": "model.hidden_size",
    "model.hidden_size=0": "model.hidden_size=0: must be > 0",
    "optim.lr=-0.001": "optim.lr=-0.001: must be a positive number",
    "data.max_frames_per_batch=100": "data.max_frames_per_batch=100: smaller than one utterance",
    "trainer.epochs=0": "trainer.epochs=0: must be > 0",
    "model.cell=transformer": "model.cell",
    "augment.noise_prob=1.5": "augment.noise_prob=1.5: must be in [0, 1]",
    "augment.snr_range=[30,5]": "augment.snr_range=[30.0, 5.0]: must be [low, high] within [-20, 100] dB",
    "augment.trim_db_range=[40,10]": "augment.trim_db_range=[40.0, 10.0]: must be [low, high] within [1, 120] dB",
    "augment.join_pause=[1.0,0.2]": "augment.join_pause=[1.0, 0.2]: must be [low, high] within [0, 5] s",
    "augment.join_prob=2": "augment.join_prob=2.0: must be in [0, 1]",
    "trainer.init_from=missing.pt": "trainer.init_from=missing.pt: ",
}


@pytest.mark.parametrize("override", list(CONFIG_CASES))
def test_config_matrix(tmp_path, capsys, override):
    code, out, err = run(["train", "data.train_manifest=a.jsonl", "data.dev_manifest=b.jsonl", override], capsys)
    assert_outcome(code, out, err, CONFIG_CASES[override], override.split("=")[0])


# ------------------------------------------------------------------ checkpoints: asr transcribe CHECKPOINT FILE
def checkpoint_case(name: str, model: Path, tmp: Path) -> Path:
    path = tmp / f"{name}.pt"
    state = torch.load(model, weights_only=True)
    if name == "truncated":
        path.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    elif name == "wrong_architecture":
        state["model"]["config"]["hidden_size"] = 32  # the weights are for 64 units
        torch.save(state, path)
    elif name == "future_version":
        state["format_version"] = 99
        torch.save(state, path)
    elif name == "malicious_pickle":
        class Exploit:
            def __reduce__(self):
                return (print, ("this must never run",))

        path.write_bytes(pickle.dumps({"format_version": 1, "x": Exploit()}))
    elif name == "not_a_checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    return path


CHECKPOINT_CASES = {
    "truncated": "corrupt or truncated checkpoint",
    "wrong_architecture": "incompatible checkpoint",
    "future_version": "checkpoint format 99 is newer than this asr supports",
    "malicious_pickle": "refused to load",
    "not_a_checkpoint": "not an asr checkpoint",
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_checkpoint_matrix(trained_tiny, tmp_path, capsys, case):
    path = checkpoint_case(case, trained_tiny[0], tmp_path)
    audio = wav(tmp_path / "a.wav", speech_like(1, 8000))
    code, out, err = run(["transcribe", str(path), str(audio)], capsys)
    assert_outcome(code, out, err, CHECKPOINT_CASES[case], path.name)
    assert "this must never run" not in out


def test_ctrl_c_in_batch_transcription_keeps_finished_outputs(trained_tiny, tmp_path):
    """Short inputs finish in the first batch; then each long one takes a while (windows). A
    SIGINT then must leave the finished outputs on disk and say what was not transcribed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    short = [audio_case(n, tmp_path) for n in ("pcm_24", "six_channels")]
    long = []
    for n in range(4):
        path = tmp_path / f"long{n}.wav"
        wav(path, speech_like(300, 8000) * 0.2)
        long.append(path)
    out_dir = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "asr", "transcribe", str(trained_tiny[0]), *map(str, short + long), "--output-dir", str(out_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while len(list(out_dir.glob("*.txt"))) < len(short):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    written = sorted(p.name for p in out_dir.glob("*.txt"))
    assert process.returncode == 130, err[-2000:]
    assert {f"{p.stem}.txt" for p in short} <= set(written) and len(written) < len(short + long)
    assert f"transcribed {len(written)} of 6 inputs; 0 failed, {6 - len(written)} not transcribed (interrupted)" in err
    assert not list(out_dir.glob(".*.tmp"))  # no half-written output
