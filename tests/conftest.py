"""Shared test factories: audio written in code, espeak-ng speech, the shared real corpora."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
# the real corpora beside the checkout; ASR_SHARED_DATA points elsewhere (e.g. a copy carried to a GPU machine)
SHARED_DATA = Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data"))
YESNO = SHARED_DATA / "yesno"
FSDD = SHARED_DATA / "fsdd"


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A (frames, channels) float32 sine with a different frequency per channel."""
    t = np.arange(int(seconds * rate)) / rate
    cols = [0.5 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_audio(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, rate, channels), rate, **kwargs)
    return path


def speak(text: str, path: Path, voice=None, rate: float = 1.0) -> Path:
    """Synthesized speech at 16 kHz (espeak-ng's en-us unless ``voice`` names another
    :class:`asr.corpora.voices.Voice`); skips the test when the engine is not installed."""
    from asr.corpora.synth import SynthItem, synthesize
    from asr.corpora.voices import Request, espeak_voice

    voice = voice or espeak_voice("en-us", "m3")
    if shutil.which(voice.engine) is None:
        pytest.skip(f"{voice.engine} is not installed")
    path.parent.mkdir(parents=True, exist_ok=True)
    [utt] = synthesize([SynthItem("test", path.stem, Request(voice, text, rate))], path.parent)
    return utt.audio_filepath


@pytest.fixture
def yesno_dir() -> Path:
    if not YESNO.is_dir():
        pytest.skip(f"real speech data not found at {YESNO}")
    return YESNO


@pytest.fixture
def fsdd_dir() -> Path:
    if not (FSDD / "recordings").is_dir():
        pytest.skip(f"real speech data not found at {FSDD}")
    return FSDD


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m asr`` as a user would, capturing its output."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "asr", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def default_sigint() -> None:
    """``preexec_fn`` for a child that must take Ctrl-C like a program started from a terminal: a
    shell without job control starts background commands with SIGINT ignored (as a CI runner may
    run this suite), and Python then never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tiny_config(manifest, out_dir, epochs: int, resume: bool = False):
    from asr.config import load_train_config

    return load_train_config(tiny_overrides(manifest, out_dir, epochs, resume))


def tiny_overrides(manifest, out_dir, epochs: int, resume: bool = False) -> list[str]:
    """A 2 x 64 BiLSTM on 8 kHz features that overfits a few yes/no files in seconds."""
    return (
        [
            f"data.train_manifest={manifest}",
            f"data.dev_manifest={manifest}",
            "features=logmel40_8k",
            "augment=none",
            "model.num_layers=2",
            "model.hidden_size=64",
            "model.dropout=0.0",
            "optim.lr=0.005",
            "optim.warmup_steps=10",
            "data.max_frames_per_batch=1400",
            "data.max_duration=10",
            "data.num_workers=0",
            "trainer.patience=0",
            "trainer.device=cpu",
            f"trainer.epochs={epochs}",
            f"trainer.output_dir={out_dir}",
            f"trainer.resume={str(resume).lower()}",
        ]
    )


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """Train once per session on 8 real yes/no recordings; returns (model, manifest, rates)."""
    if not YESNO.is_dir():
        pytest.skip(f"real speech data not found at {YESNO}")
    from asr.audio import audio_info
    from asr.data import Utterance, write_manifest
    from asr.train import train
    from asr.transcribe import Recognizer

    work = tmp_path_factory.mktemp("tiny")
    files = sorted(YESNO.glob("*.wav"))[:8]
    utts = [Utterance(f, audio_info(f)[1], " ".join("yes" if c == "1" else "no" for c in f.stem.split("_"))) for f in files]
    manifest = write_manifest(work / "train.jsonl", utts)
    model_path = train(tiny_config(manifest, work / "exp", epochs=40))
    rates = Recognizer.load(model_path, "cpu").evaluate(manifest)
    return model_path, manifest, rates
