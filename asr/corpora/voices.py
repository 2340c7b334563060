"""The speech synthesizers behind the embedded default corpus, and the voices each one has.

Three engines from Debian's packages: espeak-ng (formant synthesis: many accents and variants,
clearly robotic), flite (diphone and statistical parametric voices built from recordings of real
people: kal, awb, rms, slt) and festival (the kal and ked diphone voices, and an HTS voice of slt).
A :class:`Voice` names the person behind it (``speaker``), so that the same person speaking
through two engines is kept on one side of a train/test split.

Each engine takes a relative speaking ``rate`` (1.0: its own default) and ``pitch`` (a factor on
the voice's mean F0, where the engine can set it; flite's rms and festival's HTS voice cannot,
so their pitch is left to the training-time augmentation).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asr.errors import AsrError

ENGINES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}  # engine -> Debian package
FESTIVAL_VOICE_PACKAGES = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak-ng | flite | festival
    name: str  # the engine's name for it: "en-gb+m3", "awb", "ked_diphone"
    speaker: str  # the person (or espeak-ng variant) behind it: splits keep speakers apart
    mean_f0: float = 0.0  # Hz, where the engine can move the pitch; 0: it cannot


@dataclass(frozen=True)
class Request:
    """One utterance to speak: ``rate`` and ``pitch`` are factors (1.0: the voice's own);
    ``word_gap`` is espeak-ng's extra pause between words in 10 ms units."""

    voice: Voice
    text: str
    rate: float = 1.0
    pitch: float = 1.0
    word_gap: int = 0


ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
FLITE_VOICES = [  # kal is kal16 at 8 kHz: the same man, once band-limited like a telephone
    Voice("flite", "kal", "kal", 95.0), Voice("flite", "kal16", "kal", 95.0), Voice("flite", "awb", "awb", 125.0),
    Voice("flite", "rms", "rms"), Voice("flite", "slt", "slt", 170.0),
]
FESTIVAL_VOICES = [
    Voice("festival", "kal_diphone", "kal", 105.0), Voice("festival", "ked_diphone", "ked", 105.0),
    Voice("festival", "cmu_us_slt_arctic_hts", "slt"),
]


def espeak_voice(accent: str, variant: str) -> Voice:
    return Voice("espeak-ng", f"{accent}+{variant}", f"espeak-{variant}", 1.0)


def require_engines(voices: list[Voice]) -> None:
    """One error naming the Debian package of the first engine (or festival voice) missing."""
    for engine in sorted({v.engine for v in voices}):
        if shutil.which(engine) is None:
            raise AsrError(f"{engine} is not installed (Debian: apt-get install {ENGINES[engine]}, or run tools/setup.sh)")
    for voice in voices:
        if voice.engine == "festival" and not _festival_voice_dirs(voice.name):
            package = FESTIVAL_VOICE_PACKAGES[voice.name]
            raise AsrError(f"festival voice {voice.name} is not installed (Debian: apt-get install {package})")
    # espeak-ng speaks an unknown variant in its default voice without a word: checked here
    wanted = {v.name.split("+")[1] for v in voices if v.engine == "espeak-ng" and "+" in v.name}
    missing = sorted(wanted - _espeak_variants()) if wanted else []
    if missing:
        raise AsrError(f"espeak-ng has no voice variant {', '.join(missing)} (espeak-ng --voices=variant lists "
                       "its own; Debian 12's espeak-ng-data 1.51 has all that asr prepare synth uses)")


def _espeak_variants() -> set[str]:
    """The voice variants espeak-ng knows (``espeak-ng --voices=variant`` lists their files, ``!v/<name>``)."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
    return set(re.findall(r"!v/(\S+)", listing))


def _festival_voice_dirs(name: str) -> list[Path]:
    return [p for p in Path("/usr/share/festival/voices").glob(f"*/{name}") if p.is_dir()]


def speak_espeak(request: Request, path: Path) -> None:
    """espeak-ng: words per minute from ``rate`` (160 at 1.0), pitch 0-99 (50 at 1.0)."""
    pitch = min(99, max(0, round(50 * request.pitch)))
    cmd = ["espeak-ng", "-v", request.voice.name, "-s", str(round(160 * request.rate)), "-p", str(pitch),
           "-g", str(request.word_gap), "-w", str(path), request.text]
    _run(cmd, f"espeak-ng voice {request.voice.name}")


def speak_flite(request: Request, path: Path) -> None:
    """flite: ``duration_stretch`` slows it down, ``int_f0_target_mean`` sets its mean F0."""
    cmd = ["flite", "-voice", request.voice.name, "--setf", f"duration_stretch={1 / request.rate:.3f}"]
    if request.voice.mean_f0:
        cmd += ["--setf", f"int_f0_target_mean={request.voice.mean_f0 * request.pitch:.1f}"]
    _run(cmd + ["-t", request.text, "-o", str(path)], f"flite voice {request.voice.name}")


def speak_festival(requests: list[Request], paths: list[Path]) -> None:
    """festival: many utterances in one process (loading a voice takes longer than speaking)."""
    lines, current = [], None
    for request, path in zip(requests, paths):
        voice = request.voice
        if voice.name != current:  # a voice's own settings are reset by selecting it again
            lines.append(f"(voice_{voice.name})")
            current = voice.name
        if voice.name.endswith("_hts"):  # hts_engine's own speed factor; its pitch is not settable here
            lines.append(f"(set! hts_engine_params (append {voice.name}::hts_engine_params "
                         f"(list (list \"-r\" {request.rate:.3f}))))")
        else:
            lines.append(f"(Parameter.set 'Duration_Stretch {1 / request.rate:.3f})")
            lines.append(f"(set! int_lr_params '((target_f0_mean {voice.mean_f0 * request.pitch:.1f}) (target_f0_std 15) "
                         "(model_f0_mean 170) (model_f0_std 34)))")
        text = request.text.replace("\\", " ").replace('"', " ")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)')
    with tempfile.NamedTemporaryFile("w", suffix=".scm") as script:
        script.write("\n".join(lines) + "\n")
        script.flush()
        _run(["festival", "-b", script.name], "festival")
    for path in paths:
        if not path.is_file():
            raise AsrError(f"festival wrote no audio for {path.name}")


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[-1]
        raise AsrError(f"{what} failed: {message}")


def speak(requests: list[Request], paths: list[Path]) -> None:
    """Speak each request into the WAV at the same position of ``paths`` (any engine's rate)."""
    festival = [(r, p) for r, p in zip(requests, paths) if r.voice.engine == "festival"]
    if festival:
        speak_festival([r for r, _ in festival], [p for _, p in festival])
    for request, path in zip(requests, paths):
        if request.voice.engine == "espeak-ng":
            speak_espeak(request, path)
        elif request.voice.engine == "flite":
            speak_flite(request, path)
        elif request.voice.engine != "festival":
            raise AsrError(f"unknown speech synthesizer {request.voice.engine!r} (known: {', '.join(ENGINES)})")
