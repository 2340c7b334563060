"""LJSpeech 1.1: one speaker reading passages of 7 non-fiction books, 22,050 Hz WAV.

Layout: ``<data_dir>/metadata.csv`` (``id|raw text|normalized text``, pipe-separated, no quoting)
and ``<data_dir>/wavs/<id>.wav``; ``<data_dir>/LJSpeech-1.1/`` is accepted too. The id's prefix
(``LJ001`` of ``LJ001-0001``) is its chapter. The split is speaker-dependent (there is one
speaker) but by chapter, so dev and test hold passages never seen in training: chapters 5, 25
and 45 are dev, every tenth (10, 20, 30, 40, 50) is test.

Text: the third column, where the corpus's authors spelled out numbers, abbreviations and
symbols ("in 1884" -> "in eighteen eighty-four"); lower case and punctuation removal follow in the
tokenizer's normalization.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from asr.corpora.common import Archive, durations, ensure_downloaded, require
from asr.data import Utterance, write_manifest
from asr.errors import AsrError

log = logging.getLogger(__name__)

ARCHIVE = Archive(
    "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2",
    "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5",
    "LJSpeech-1.1",
)
LAYOUT = "the LJSpeech layout <data_dir>/metadata.csv (id|text|normalized text) and <data_dir>/wavs/<id>.wav"
DEV_CHAPTERS = frozenset({5, 25, 45})
TEST_CHAPTERS = frozenset({10, 20, 30, 40, 50})


def split_of(utt_id: str) -> str:
    chapter = int(utt_id[2:5])
    return "dev" if chapter in DEV_CHAPTERS else "test" if chapter in TEST_CHAPTERS else "train"


def prepare_ljspeech(data_dir: str | Path, out_dir: str | Path, download: bool = False) -> dict[str, Path]:
    """Manifests ``train``, ``dev`` and ``test`` split by chapter."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not (data_dir / "metadata.csv").is_file():
        if download and not (data_dir / "LJSpeech-1.1").is_dir():
            ensure_downloaded(data_dir, [ARCHIVE], download, LAYOUT)
        if (data_dir / "LJSpeech-1.1" / "metadata.csv").is_file():
            data_dir = data_dir / "LJSpeech-1.1"
    metadata = require(data_dir / "metadata.csv", LAYOUT)
    items: dict[str, list[tuple[Path, str]]] = {"train": [], "dev": [], "test": []}
    with open(metadata, encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), start=1):
            if len(row) < 2 or not row[0].startswith("LJ") or not row[0][2:5].isdigit():
                raise AsrError(f"{metadata}:{number}: expected 'LJnnn-nnnn|text|normalized text'")
            audio = data_dir / "wavs" / f"{row[0]}.wav"
            if not audio.is_file():
                raise AsrError(f"{metadata}:{number}: audio file not found: {audio}")
            items[split_of(row[0])].append((audio.resolve(), row[2] if len(row) > 2 and row[2] else row[1]))
    paths = {}
    for name, chosen in items.items():
        seconds = durations([p for p, _ in chosen], f"ljspeech {name}")
        paths[name] = write_manifest(out_dir / f"{name}.jsonl", [Utterance(p, d, t) for (p, t), d in zip(chosen, seconds)])
        log.info("ljspeech %s: %d utterances", name, len(chosen))
    return paths
