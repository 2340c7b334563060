"""The embedded default corpus: multi-voice English speech synthesized with espeak-ng.

Transcripts come from a small grammar owned here (digit strings, times, dates, short
commands). Voices are espeak-ng accents combined with voice variants; the variants used for
dev and test never occur in training, so the test set measures generalization to new voices.
"""

from __future__ import annotations

import logging
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from asr.audio import load_audio
from asr.data import Utterance, write_manifest
from asr.errors import AsrError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m5", "m7", "f1", "f2", "f4", "klatt", "klatt3"]
DEV_VARIANTS = ["m6", "f5"]
TEST_VARIANTS = ["m4", "f3", "klatt2"]
SPLIT_SHARES = {"train": 0.84, "dev": 0.06, "test": 0.10}

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
HOURS = DIGITS[1:] + ["ten", "eleven", "twelve"]
MINUTES = ["o'clock", "fifteen", "thirty", "forty five", "ten", "twenty", "fifty", "oh five"]
DAY_PARTS = ["", "", "in the morning", "in the afternoon", "in the evening", "at night"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
            "eighteenth", "nineteenth", "twentieth"] + [f"twenty {o}" for o in ["first", "second", "third",
            "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]] + ["thirtieth", "thirty first"]
SLOTS = {
    "room": ["kitchen", "bedroom", "living room", "garage", "office", "hallway", "bathroom"],
    "name": ["john", "mary", "alice", "peter", "susan", "david", "emma", "oliver"],
    "city": ["london", "paris", "boston", "tokyo", "berlin", "madrid", "chicago", "sydney"],
    "genre": ["jazz", "rock", "classical", "country", "folk", "blues"],
    "task": ["buy milk", "feed the cat", "water the plants", "pay the rent", "call the doctor", "take out the trash"],
    "thing": ["lights", "heating", "radio", "fan", "television", "music"],
}
TEMPLATES = [
    "turn on the {room} {thing}", "turn off the {room} {thing}", "call {name}", "send a message to {name}",
    "play some {genre} music", "what is the weather in {city}", "remind me to {task} at {time}",
    "set an alarm for {time}", "book a flight to {city} on {date}", "open the {room} door",
    "how far is {city} from {city}", "meet {name} in {city} on {date}", "{name} will {task} tomorrow",
]


def digit_string(r: random.Random) -> str:
    return " ".join(r.choice(DIGITS) for _ in range(r.randint(3, 7)))


def time_phrase(r: random.Random) -> str:
    return " ".join(p for p in (r.choice(HOURS), r.choice(MINUTES), r.choice(DAY_PARTS)) if p)


def date_phrase(r: random.Random) -> str:
    month, day = r.choice(MONTHS), r.choice(ORDINALS)
    return f"{month} {day}" if r.random() < 0.5 else f"the {day} of {month}"


def sentence(r: random.Random) -> str:
    text = r.choice(TEMPLATES)
    while "{" in text:
        start = text.index("{")
        slot = text[start + 1 : text.index("}", start)]
        value = {"time": time_phrase, "date": date_phrase}.get(slot, lambda rr: rr.choice(SLOTS[slot]))(r)
        text = text[:start] + value + text[text.index("}", start) + 1 :]
    return text


def random_transcript(r: random.Random) -> str:
    """One utterance of the grammar: 30 % digit strings, 15 % times, 15 % dates, 40 % commands."""
    kind = r.random()
    if kind < 0.30:
        return digit_string(r)
    if kind < 0.45:
        return time_phrase(r)
    if kind < 0.60:
        return date_phrase(r)
    return sentence(r)


@dataclass(frozen=True)
class SynthItem:
    split: str
    key: str
    text: str
    voice: str
    rate: int  # words per minute
    pitch: int  # 0-99


def plan_corpus(num_utterances: int, seed: int) -> list[SynthItem]:
    """Decide text, voice, rate and pitch of every utterance (deterministic in ``seed``)."""
    r = random.Random(seed)
    variants = {"train": TRAIN_VARIANTS, "dev": DEV_VARIANTS, "test": TEST_VARIANTS}
    items = []
    for split, share in SPLIT_SHARES.items():
        for n in range(max(1, round(num_utterances * share))):
            voice = f"{r.choice(ACCENTS)}+{r.choice(variants[split])}"
            items.append(SynthItem(split, f"{split}-{n:05d}", random_transcript(r), voice, r.randint(130, 190), r.randint(30, 70)))
    return items


def synthesize(item: SynthItem, path: Path) -> float:
    """Speak ``item`` with espeak-ng into a 16 kHz WAV at ``path``; returns its duration."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        cmd = ["espeak-ng", "-v", item.voice, "-s", str(item.rate), "-p", str(item.pitch), "-w", tmp.name, item.text]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise AsrError(f"espeak-ng failed for voice {item.voice}: {done.stderr.strip()}")
        waveform = load_audio(tmp.name, SAMPLE_RATE)
    sf.write(path, waveform.numpy(), SAMPLE_RATE, subtype="PCM_16")
    return waveform.shape[0] / SAMPLE_RATE


def prepare_synth(out_dir: str | Path, size: int = 3000, seed: int = 0, workers: int = 4) -> dict[str, Path]:
    """Generate the corpus under ``out_dir`` (wav/ and {train,dev,test}.jsonl); returns the
    manifests. Existing complete manifests are kept (the marker is the manifest itself)."""
    if shutil.which("espeak-ng") is None:
        raise AsrError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    out_dir = Path(out_dir)
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    items = plan_corpus(size, seed)

    def run(item: SynthItem) -> Utterance:
        path = wav_dir / f"{item.key}.wav"
        return Utterance(path, synthesize(item, path), item.text)

    with ThreadPoolExecutor(workers) as pool:
        utts = list(tqdm(pool.map(run, items), total=len(items), desc="espeak-ng", leave=False, disable=None))
    manifests = {}
    for split in SPLIT_SHARES:
        chosen = [u for u, item in zip(utts, items) if item.split == split]
        manifests[split] = write_manifest(out_dir / f"{split}.jsonl", chosen)
        log.info("synth %s: %d utterances, %.1f minutes", split, len(chosen), sum(u.duration for u in chosen) / 60)
    (out_dir / "voices.txt").write_text("".join(f"{i.key}\t{i.voice}\t{i.rate}\t{i.pitch}\n" for i in items))
    return manifests
