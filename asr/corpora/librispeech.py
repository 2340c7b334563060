"""LibriSpeech (OpenSLR SLR12) and Mini LibriSpeech (SLR31): read audiobooks, 16 kHz FLAC.

Layout: ``<data_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac``
with one ``<speaker>-<chapter>.trans.txt`` per chapter (``<utterance-id> TEXT IN CAPITALS``);
``<data_dir>/<subset>/...`` is accepted too. Any subsets may be asked for; ``train-960`` stands for
train-clean-100 + train-clean-360 + train-other-500 and is written as one manifest.

Text: upper case without punctuation except apostrophes; lower-cased by the tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from asr.corpora.common import Archive, durations, ensure_downloaded
from asr.data import Utterance, write_manifest
from asr.errors import AsrError

log = logging.getLogger(__name__)

OPENSLR = "http://www.openslr.org/resources"
# SHA-256 of the OpenSLR archives (as recorded by torchaudio.datasets.LIBRISPEECH); the Mini
# LibriSpeech archives have none recorded here: their digest is logged on download.
SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
MINI = ("dev-clean-2", "train-clean-5")
ALIASES = {"train-960": ("train-clean-100", "train-clean-360", "train-other-500")}
DEFAULT_SUBSETS = ("train-clean-100", "dev-clean", "test-clean", "test-other")
LAYOUT = "the LibriSpeech layout <data_dir>/LibriSpeech/<subset>/<speaker>/<chapter>/*.flac + *.trans.txt"


def archive(subset: str) -> Archive:
    if subset in MINI:
        return Archive(f"{OPENSLR}/31/{subset}.tar.gz", None, f"LibriSpeech/{subset}")
    if subset not in SHA256:
        raise AsrError(f"unknown LibriSpeech subset {subset!r} (known: {', '.join([*SHA256, *MINI, *ALIASES])})")
    return Archive(f"{OPENSLR}/12/{subset}.tar.gz", SHA256[subset], f"LibriSpeech/{subset}")


def subset_dir(data_dir: Path, subset: str, download: bool) -> Path:
    for candidate in (data_dir / "LibriSpeech" / subset, data_dir / subset):
        if candidate.is_dir():
            return candidate
    ensure_downloaded(data_dir, [archive(subset)], download, LAYOUT)
    return data_dir / "LibriSpeech" / subset


def read_subset(folder: Path) -> list[Utterance]:
    """Every utterance of one subset folder, in sorted chapter order."""
    transcripts = sorted(folder.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise AsrError(f"{folder}: no <speaker>/<chapter>/<speaker>-<chapter>.trans.txt files; expected {LAYOUT}")
    items: list[tuple[Path, str]] = []
    for trans in transcripts:
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.partition(" ")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.is_file():
                raise AsrError(f"{trans}:{number}: audio file not found: {audio}")
            items.append((audio.resolve(), text.strip()))
    seconds = durations([p for p, _ in items], f"librispeech {folder.name}")
    return [Utterance(p, d, text) for (p, text), d in zip(items, seconds)]


def prepare_librispeech(
    data_dir: str | Path,
    out_dir: str | Path,
    subsets: Sequence[str] = DEFAULT_SUBSETS,
    download: bool = False,
) -> dict[str, Path]:
    """One manifest per requested subset (``<out_dir>/<subset>.jsonl``)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    for name in subsets:  # fail on a misspelt subset before reading anything
        for part in ALIASES.get(name, (name,)):
            archive(part)
    paths = {}
    for name in subsets:
        utts = [u for part in ALIASES.get(name, (name,)) for u in read_subset(subset_dir(data_dir, part, download))]
        paths[name] = write_manifest(out_dir / f"{name}.jsonl", utts)
        log.info("librispeech %s: %d utterances, %.1f h", name, len(utts), sum(u.duration for u in utts) / 3600)
    return paths
