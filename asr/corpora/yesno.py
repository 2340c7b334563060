"""Kaldi "yesno" (OpenSLR SLR1): 60 recordings of one man saying eight words, each yes or no.

Layout: ``<data_dir>/<b>_<b>_<b>_<b>_<b>_<b>_<b>_<b>.wav`` (8 kHz), the transcript in the name
(1 = yes, 0 = no); the archive's own folder ``waves_yesno/`` is accepted as well. The sorted
files alternate between training and test (30 each); dev is five of the training half, held out.
Kaldi's split (first half trains, second half tests) is not used: in sorted order every training
file then starts with "no" and every test file with "yes", and a BiLSTM learns the position.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from asr.corpora.common import DOWNLOAD_HINT, Archive, durations, ensure_downloaded
from asr.data import Utterance, write_manifest
from asr.errors import AsrError

log = logging.getLogger(__name__)

ARCHIVE = Archive(
    "http://www.openslr.org/resources/1/waves_yesno.tar.gz",
    "c3f49e0cca421f96b75b41640749167b52118f232498667ca7a5f9416aef8e73",
    "waves_yesno",
)
NAME = re.compile(r"^[01](_[01]){7}\.wav$")
LAYOUT = "the yesno layout <data_dir>/<0|1>_..._<0|1>.wav (eight 0/1 fields, 8 kHz)"
DEV_FILES = 5


def transcript(path: Path) -> str:
    return " ".join("yes" if bit == "1" else "no" for bit in path.stem.split("_"))


def find_recordings(data_dir: Path, download: bool = False) -> list[Path]:
    if download and not any(NAME.match(p.name) for p in data_dir.glob("*.wav")):
        ensure_downloaded(data_dir, [ARCHIVE], download, LAYOUT)
    for folder in (data_dir, data_dir / "waves_yesno"):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if NAME.match(p.name))
            if files:
                return files
    if not data_dir.is_dir():
        raise AsrError(f"{data_dir}: not found; expected {LAYOUT} ({DOWNLOAD_HINT})")
    raise AsrError(f"{data_dir}: no <0|1>_..._<0|1>.wav files; expected {LAYOUT}")


def prepare_yesno(data_dir: str | Path, out_dir: str | Path, download: bool = False) -> dict[str, Path]:
    """Manifests ``train`` (25 files), ``dev`` (5) and ``test`` (30), text "yes no no ..."."""
    files = find_recordings(Path(data_dir), download)
    seconds = durations(files, "yesno durations")
    utts = [Utterance(p.resolve(), d, transcript(p)) for p, d in zip(files, seconds)]
    train, test = utts[0::2], utts[1::2]
    dev = train[DEV_FILES // 2 :: max(1, len(train) // DEV_FILES)][:DEV_FILES]  # spread over the sorted list
    splits = {"train": [u for u in train if u not in dev], "dev": dev, "test": test}
    out_dir = Path(out_dir)
    paths = {name: write_manifest(out_dir / f"{name}.jsonl", chosen) for name, chosen in splits.items()}
    log.info("yesno: %s", ", ".join(f"{n} {len(u)}" for n, u in splits.items()))
    return paths
