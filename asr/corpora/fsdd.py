"""Free Spoken Digit Dataset: isolated digits and connected digit strings.

Layout expected: ``<data_dir>/recordings/{digit}_{speaker}_{take}.wav`` (8 kHz mono).
Upstream split: takes 0-4 are test, the rest train; here takes 5-9 are carved out as dev.
Connected strings (3-7 digits) are clips of one speaker joined by short random pauses, each
built from clips of its own split only; their true digit boundaries are written beside the
manifests (``connected_<split>.alignments.jsonl``) for timestamp checks.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from asr.audio import audio_info
from asr.data import Utterance, write_manifest
from asr.errors import AsrError

log = logging.getLogger(__name__)

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SAMPLE_RATE = 8000
NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


@dataclass(frozen=True)
class Clip:
    path: Path
    digit: int
    speaker: str
    take: int
    duration: float


def find_clips(data_dir: str | Path) -> list[Clip]:
    """All clips under ``data_dir/recordings``; raises naming what is missing."""
    recordings = Path(data_dir) / "recordings"
    if not recordings.is_dir():
        raise AsrError(f"{recordings}: not found; expected the FSDD layout <data_dir>/recordings/<digit>_<speaker>_<take>.wav")
    clips = []
    for path in sorted(recordings.iterdir()):
        match = NAME.match(path.name)
        if match:
            digit, speaker, take = match.groups()
            clips.append(Clip(path.resolve(), int(digit), speaker, int(take), audio_info(path)[1]))
    if not clips:
        raise AsrError(f"{recordings}: no <digit>_<speaker>_<take>.wav files")
    return clips


def split_by_take(clip: Clip) -> str:
    return "test" if clip.take < 5 else "dev" if clip.take < 10 else "train"


def make_connected(clips: list[Clip], count: int, out_dir: Path, rng: random.Random) -> tuple[list[Utterance], list[dict]]:
    """``count`` strings of 3-7 digits, each from one speaker's clips, joined by 50-300 ms pauses."""
    by_speaker: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_speaker[clip.speaker].append(clip)
    speakers = sorted(by_speaker)
    out_dir.mkdir(parents=True, exist_ok=True)
    utts, alignments = [], []
    for n in tqdm(range(count), desc=f"connected {out_dir.name}", leave=False, disable=None):
        chosen = rng.choices(by_speaker[rng.choice(speakers)], k=rng.randint(3, 7))
        pieces, words, t = [], [], 0.0
        for i, clip in enumerate(chosen):
            if i:
                pause = np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE), dtype=np.float32)
                pieces.append(pause)
                t += len(pause) / SAMPLE_RATE
            audio, rate = sf.read(clip.path, dtype="float32")
            if rate != SAMPLE_RATE:
                raise AsrError(f"{clip.path}: expected {SAMPLE_RATE} Hz, found {rate} Hz")
            pieces.append(audio if audio.ndim == 1 else audio.mean(axis=1))
            words.append({"word": DIGIT_WORDS[clip.digit], "start": round(t, 4), "end": round(t + len(pieces[-1]) / SAMPLE_RATE, 4)})
            t = words[-1]["end"]
        path = out_dir / f"{out_dir.name}-{n:05d}.wav"
        sf.write(path, np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
        text = " ".join(w["word"] for w in words)
        utts.append(Utterance(path, t, text, speaker=chosen[0].speaker))
        alignments.append({"audio_filepath": path.name, "text": text, "words": words})
    return utts, alignments


def _write_split(out_dir: Path, name: str, clips: list[Clip], connected: int, rng: random.Random) -> dict[str, Path]:
    isolated = [Utterance(c.path, c.duration, DIGIT_WORDS[c.digit], speaker=c.speaker) for c in clips]
    strings, alignments = make_connected(clips, connected, out_dir / "connected" / name, rng)
    paths = {
        f"isolated_{name}": write_manifest(out_dir / f"isolated_{name}.jsonl", isolated),
        f"connected_{name}": write_manifest(out_dir / f"connected_{name}.jsonl", strings),
    }
    with open(out_dir / f"connected_{name}.alignments.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(a) + "\n" for a in alignments)
    if name != "test":  # training and dev mix both kinds; test sets stay apart
        paths[name] = write_manifest(out_dir / f"{name}.jsonl", isolated + strings)
    log.info("fsdd %s: %d isolated, %d connected", name, len(isolated), len(strings))
    return paths


def connected_counts(size: int | None) -> dict[str, int]:
    """Connected strings per split: ``size`` for training (default 2,000), dev and test in the
    default's proportion (150 and 300 for 2,000), at least one each."""
    train = 2000 if size is None else size
    if train < 1:
        raise AsrError(f"--size {train}: the number of connected training strings must be positive")
    return {"train": train, "dev": max(1, round(train * 0.075)), "test": max(1, round(train * 0.15))}


def prepare_fsdd(
    data_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    connected: dict[str, int] | None = None,
    size: int | None = None,
) -> dict[str, Path]:
    """Manifests for the take-based split: train/dev (isolated + connected mixed) and
    isolated_test / connected_test; ``size`` connected training strings (see :func:`connected_counts`)."""
    counts = connected or connected_counts(size)
    clips = find_clips(data_dir)
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for name in ("train", "dev", "test"):
        chosen = [c for c in clips if split_by_take(c) == name]
        paths.update(_write_split(out_dir, name, chosen, counts[name], rng))
    return paths


def prepare_fsdd_speaker(
    data_dir: str | Path,
    out_dir: str | Path,
    held_out: str = "theo",
    seed: int = 0,
    connected: dict[str, int] | None = None,
    size: int | None = None,
) -> dict[str, Path]:
    """Speaker-held-out split: train/dev on four speakers (dev = their takes 0-4), test on the
    fifth speaker's every take, so the figures measure generalization to a new voice."""
    counts = connected or connected_counts(size)
    clips = find_clips(data_dir)
    if held_out not in {c.speaker for c in clips}:
        raise AsrError(f"speaker {held_out!r} not found in {data_dir}")
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    groups = {
        "train": [c for c in clips if c.speaker != held_out and c.take >= 5],
        "dev": [c for c in clips if c.speaker != held_out and c.take < 5],
        "test": [c for c in clips if c.speaker == held_out],
    }
    paths: dict[str, Path] = {}
    for name, chosen in groups.items():
        paths.update(_write_split(out_dir, name, chosen, counts[name], rng))
    return paths


def prepare_fsdd_clips(data_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Every clip as one isolated-digit manifest (``fsdd_clips.jsonl``): real voices for
    measuring a model trained on other speech (the default job's, on synthetic voices)."""
    clips = find_clips(data_dir)
    utts = [Utterance(c.path, c.duration, DIGIT_WORDS[c.digit], speaker=c.speaker) for c in clips]
    log.info("fsdd clips: %d from %d speakers", len(utts), len({c.speaker for c in clips}))
    return {"fsdd_clips": write_manifest(Path(out_dir) / "fsdd_clips.jsonl", utts)}
