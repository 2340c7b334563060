"""Live check: real people's speech through a (virtual) microphone into ``asr stream``.

    python tools/live_check.py [MODEL] [--fsdd DIR] [--strings 12] [--seed 0]

Builds one recording from Free Spoken Digit Dataset clips (real people saying digits: each
string is 3-5 clips of one speaker joined by 0.15-0.4 s pauses, strings 1.5 s apart, upsampled to
PulseAudio's 44.1 kHz), plays it with ``paplay`` into a PulseAudio null sink while ``asr stream
MODEL --input-device pulse --json`` listens on the sink's monitor, as a user speaking into a
microphone would be heard. Reports the WER of the stream's final results against the truth, and
against the same file transcribed offline (``asr transcribe``) and streamed from the file (``asr
stream --input``): what the device path itself loses. Starts PulseAudio when none runs (and stops
it again). MODEL defaults to the default job's model, recipes/synth/exp/model.pt.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asr.audio import resample_samples  # noqa: E402
from asr.corpora.fsdd import DIGIT_WORDS, find_clips  # noqa: E402
from asr.scoring import score  # noqa: E402

RATE = 8000  # FSDD's own rate, at which the strings are joined
# the rate the recording is played at: PulseAudio's own, as a microphone in the room would record it.
# At 8 kHz, PulseAudio's resampler (speex, quality 1) would mirror the clips' formants above 4 kHz,
# a sound no microphone hears, and which per-utterance normalization raises to full scale
PLAY_RATE = 44100


def build_recording(fsdd: Path, strings: int, seed: int, path: Path, speaker: str | None = None) -> list[str]:
    """Write the test recording to ``path`` (the five speakers in turn, or ``speaker`` alone);
    returns the text of each string."""
    rng = random.Random(seed)
    clips = find_clips(fsdd)
    speakers = [speaker] if speaker else sorted({c.speaker for c in clips})
    if speaker and not any(c.speaker == speaker for c in clips):
        sys.exit(f"live_check: --speaker {speaker}: no such speaker in {fsdd}")
    pieces, texts = [np.zeros(RATE, dtype=np.float32)], []
    for n in range(strings):
        who = speakers[n % len(speakers)]
        chosen = rng.sample([c for c in clips if c.speaker == who], rng.randint(3, 5))
        for i, clip in enumerate(chosen):
            if i:
                pieces.append(np.zeros(int(rng.uniform(0.15, 0.4) * RATE), dtype=np.float32))
            audio, _ = sf.read(clip.path, dtype="float32")
            pieces.append(audio)
        pieces.append(np.zeros(int(1.5 * RATE), dtype=np.float32))
        texts.append(" ".join(DIGIT_WORDS[c.digit] for c in chosen))
    sf.write(path, resample_samples(np.concatenate(pieces), RATE, PLAY_RATE), PLAY_RATE, subtype="PCM_16")
    return texts


def start_pulseaudio() -> bool:
    """A PulseAudio server whose default source is the null sink's monitor; True if started here."""
    for tool in ("pulseaudio", "paplay", "pactl"):
        if shutil.which(tool) is None:
            sys.exit(f"live_check: {tool} is not installed (apt-get install pulseaudio pulseaudio-utils)")
    started = subprocess.run(["pulseaudio", "--check"]).returncode != 0
    if started:
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1"], check=True, capture_output=True)
    # a freshly started server answers before it has loaded its null sink: wait for the monitor
    for _ in range(100):
        if subprocess.run(["pactl", "set-default-source", "auto_null.monitor"], capture_output=True).returncode == 0:
            return started
        time.sleep(0.1)
    sys.exit("live_check: PulseAudio has no null sink monitor (auto_null.monitor)")


def finals(stdout: str) -> str:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return " ".join(e["text"] for e in events if e["type"] == "final")


def through_microphone(model: Path, recording: Path, options: list[str]) -> str:
    """The finals of ``asr stream`` on the PulseAudio monitor while ``paplay`` plays ``recording``."""
    listener = subprocess.Popen(
        [sys.executable, "-m", "asr", "stream", str(model), "--input-device", "pulse", "--json", *options], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while "listening on" not in listener.stderr.readline():
            if listener.poll() is not None or time.time() > deadline:
                sys.exit(f"live_check: asr stream did not start: {listener.stderr.read()}")
        subprocess.run(["paplay", str(recording)], check=True)
        time.sleep(1.5)
    finally:
        listener.send_signal(signal.SIGINT)  # Ctrl-C commits what was heard
        out, err = listener.communicate(timeout=120)
    if listener.returncode != 0:
        sys.exit(f"live_check: asr stream failed: {err.strip().splitlines()[-1] if err.strip() else listener.returncode}")
    return out


def asr(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "asr", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"live_check: asr {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(ROOT / "recipes" / "synth" / "exp" / "model.pt"))
    parser.add_argument("--fsdd", default=str(Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "fsdd"))
    parser.add_argument("--strings", type=int, default=12, help="digit strings in the recording")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speaker", help="every string from this FSDD speaker (default: the five in turn)")
    parser.add_argument("--speaker-norm", action="store_true",
                        help="asr stream --speaker-norm: each segment normalized with all the speech so far")
    parser.add_argument("--adapt", action="store_true",
                        help="asr stream --adapt: the speaker's transform refitted after each final result")
    parser.add_argument("--lm", help="an n-gram LM (ARPA) for beam search, in every decode (its tuned weights)")
    parser.add_argument("--no-microphone", action="store_true",
                        help="only the file stream and the offline transcription (no PulseAudio, not in real time)")
    args = parser.parse_args()
    options = [f"--{name.replace('_', '-')}" for name in ("speaker_norm", "adapt") if getattr(args, name)]
    decoding = ["--lm", str(Path(args.lm).resolve())] if args.lm else []
    model = Path(args.model).resolve()
    if not model.is_file():
        sys.exit(f"live_check: {model}: model not found (run bash recipes/synth/run.sh first)")
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "live.wav"
        texts = build_recording(Path(args.fsdd), args.strings, args.seed, recording, args.speaker)
        truth, seconds = " ".join(texts), sf.info(str(recording)).duration
        heard = None if args.no_microphone else microphone_finals(model, recording, options + decoding)
        offline = asr("transcribe", str(model), str(recording), *decoding).strip()
        from_file = finals(asr("stream", str(model), "--input", str(recording), "--json", "--no-realtime",
                               *options, *decoding))
    print(f"command: {' '.join(sys.argv)}")
    who = f"FSDD speaker {args.speaker}" if args.speaker else "the five FSDD speakers"
    print(f"recording: {args.strings} digit strings of {who}, {len(truth.split())} words, {seconds:.1f} s")
    print(f"truth:       {truth}")
    if heard is not None:
        print(f"microphone:  {heard}")
    print(f"offline:     {offline}")
    rows = [("microphone finals vs truth", truth, heard), ("offline (asr transcribe) vs truth", truth, offline),
            ("file stream (asr stream --input) vs truth", truth, from_file),
            ("microphone finals vs offline", offline, heard)]
    for name, reference, hypothesis in rows:
        if hypothesis is not None:
            print(f"{name:45s} {score([reference], [hypothesis]).summary()}")


def microphone_finals(model: Path, recording: Path, options: list[str]) -> str:
    """The finals of ``asr stream`` through the PulseAudio virtual microphone (started here if
    none runs, and stopped again)."""
    started = start_pulseaudio()
    try:
        return finals(through_microphone(model, recording, options))
    finally:
        if started:
            subprocess.run(["pulseaudio", "--kill"], capture_output=True)


if __name__ == "__main__":
    main()
