"""The embedded default corpus: multi-voice English speech from three speech synthesizers.

Transcripts come from a small grammar owned here (digits alone and in strings, times, dates,
short commands). Voices come from espeak-ng (accents x variants), flite and festival
(:mod:`asr.corpora.voices`), each utterance at its own random speaking rate and pitch. Whole
voices are held out: dev and test speak with espeak-ng variants never heard in training, and
test also with flite's rms, a real man's voice no training voice shares, so the test set
measures generalization to new voices.
"""

from __future__ import annotations

import logging
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from asr.audio import load_audio
from asr.corpora.voices import ESPEAK_ACCENTS, FESTIVAL_VOICES, FLITE_VOICES, Request, Voice, espeak_voice, require_engines, speak
from asr.data import Utterance, write_manifest

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
TRAIN_VARIANTS = ["m1", "m2", "m3", "m5", "m7", "f1", "f2", "f4", "klatt", "klatt3"]
DEV_VARIANTS = ["m6", "f5"]
TEST_VARIANTS = ["m4", "f3", "klatt2"]
TEST_SPEAKERS = {"rms"}  # the real voice held out for test (flite's rms)
SPLIT_SHARES = {"train": 0.84, "dev": 0.06, "test": 0.10}
# per split, (share of its utterances, the voices they are spoken in): espeak-ng voices are an
# accent with a variant; whole speakers of flite and festival stay on one side
SPLIT_VOICES: dict[str, list[tuple[float, list[Voice]]]] = {
    "train": [
        (0.55, [espeak_voice(a, v) for a in ESPEAK_ACCENTS for v in TRAIN_VARIANTS]),
        (0.25, [v for v in FLITE_VOICES if v.speaker not in TEST_SPEAKERS]),
        (0.20, [v for v in FESTIVAL_VOICES if v.speaker not in TEST_SPEAKERS]),
    ],
    "dev": [(1.0, [espeak_voice(a, v) for a in ESPEAK_ACCENTS for v in DEV_VARIANTS])],
    "test": [
        (0.75, [espeak_voice(a, v) for a in ESPEAK_ACCENTS for v in TEST_VARIANTS]),
        (0.25, [v for v in FLITE_VOICES if v.speaker in TEST_SPEAKERS]),
    ],
}
RATE_RANGE = (0.8, 1.25)  # speaking rate, relative to each voice's own
PITCH_RANGE = (0.8, 1.25)  # mean F0, relative to each voice's own (where the engine can set it)
WORD_GAPS = [0, 0, 0, 1, 2, 4, 8]  # espeak-ng pauses between words, 10 ms units

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
    """One digit alone (30 %), two (15 %) or a string of 3-7 (55 %)."""
    u = r.random()
    count = 1 if u < 0.30 else 2 if u < 0.45 else r.randint(3, 7)
    return " ".join(r.choice(DIGITS) for _ in range(count))


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
    """One utterance of the grammar: 30 % digits, 15 % times, 15 % dates, 40 % commands."""
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
    request: Request


def plan_corpus(num_utterances: int, seed: int) -> list[SynthItem]:
    """Decide text, voice, rate and pitch of every utterance (deterministic in ``seed``)."""
    r = random.Random(seed)
    items = []
    for split, share in SPLIT_SHARES.items():
        groups = SPLIT_VOICES[split]
        for n in range(max(1, round(num_utterances * share))):
            voices = r.choices([g for _, g in groups], weights=[w for w, _ in groups])[0]
            voice = r.choice(voices)
            request = Request(voice, random_transcript(r), round(r.uniform(*RATE_RANGE), 3),
                              round(r.uniform(*PITCH_RANGE), 3), r.choice(WORD_GAPS) if voice.engine == "espeak-ng" else 0)
            items.append(SynthItem(split, f"{split}-{n:05d}", request))
    return items


def synthesize(items: list[SynthItem], wav_dir: Path) -> list[Utterance]:
    """Speak ``items`` into 16 kHz WAVs ``<wav_dir>/<key>.wav``; returns their utterances."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = [Path(tmp) / f"{item.key}.wav" for item in items]
        speak([item.request for item in items], raw)
        utts = []
        for item, source in zip(items, raw):
            waveform = load_audio(source, SAMPLE_RATE)
            path = wav_dir / f"{item.key}.wav"
            sf.write(path, waveform.numpy(), SAMPLE_RATE, subtype="PCM_16")
            utts.append(Utterance(path, waveform.shape[0] / SAMPLE_RATE, item.request.text))
    return utts


def prepare_synth(out_dir: str | Path, size: int = 6000, seed: int = 0, workers: int = 4) -> dict[str, Path]:
    """Generate the corpus under ``out_dir`` (wav/ and {train,dev,test}.jsonl); returns the
    manifests. Files already there are overwritten (the recipe's done-marker skips the stage)."""
    items = plan_corpus(size, seed)
    require_engines([item.request.voice for item in items])
    out_dir = Path(out_dir)
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    chunks = [items[i : i + 25] for i in range(0, len(items), 25)]  # festival loads its voices once per chunk
    with ThreadPoolExecutor(workers) as pool:
        done = pool.map(lambda chunk: synthesize(chunk, wav_dir), chunks)
        utts = [u for chunk in tqdm(done, total=len(chunks), desc="synthesizing", leave=False, disable=None) for u in chunk]
    manifests = {}
    for split in SPLIT_SHARES:
        chosen = [u for u, item in zip(utts, items) if item.split == split]
        manifests[split] = write_manifest(out_dir / f"{split}.jsonl", chosen)
        log.info("synth %s: %d utterances, %.1f minutes", split, len(chosen), sum(u.duration for u in chosen) / 60)
    (out_dir / "voices.txt").write_text("key\tengine\tvoice\trate\tpitch\tword_gap\n" + "".join(
        f"{i.key}\t{i.request.voice.engine}\t{i.request.voice.name}\t{i.request.rate}\t{i.request.pitch}\t"
        f"{i.request.word_gap}\n" for i in items))
    return manifests
