"""TED-LIUM release 3 (OpenSLR SLR51): TED talks, 16 kHz NIST SPHERE, one file per talk.

Layout: ``<data_dir>/legacy/{train,dev,test}/{sph,stm}/<talk>.{sph,stm}`` (the release-2 split
shipped in release 3); when ``<data_dir>/data/{sph,stm}`` (all 452 h of training talks) exists it
replaces ``legacy/train``. Each stm line is ``talk channel speaker start end <label> words``; a
segment becomes a manifest line with ``offset = start`` and ``duration = end - start`` (the audio
is never cut into files). Segments whose text is ``ignore_time_segment_in_scoring`` are dropped.

Text: ``<unk>`` (a word the transcribers could not resolve) is removed, the corpus's split
contractions are joined (``it 's`` -> ``it's``), lower case, no punctuation.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from asr.corpora.common import Archive, ensure_downloaded, require
from asr.data import Utterance, write_manifest
from asr.errors import AsrError

log = logging.getLogger(__name__)

ARCHIVE = Archive(
    "http://www.openslr.org/resources/51/TEDLIUM_release-3.tgz",
    "ad1e454d14d1ad550bc2564c462d87c7a7ec83d4dc2b9210f22ab4973b9eccdb",
    "TEDLIUM_release-3",
)
LAYOUT = "the TED-LIUM 3 layout <data_dir>/legacy/{train,dev,test}/{sph,stm}/<talk>.{sph,stm}"
IGNORE = "ignore_time_segment_in_scoring"


def clean_text(words: str) -> str:
    text = re.sub(r"<unk>", " ", words.lower())
    text = re.sub(r" '(?=\w)", "'", " " + text)  # "it 's" -> "it's"
    return " ".join(text.split())


def parse_stm(stm: Path, sph_dir: Path) -> list[Utterance]:
    utts = []
    for number, line in enumerate(stm.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split(maxsplit=6)
        if len(fields) < 5:
            raise AsrError(f"{stm}:{number}: expected 'talk channel speaker start end [<label>] words'")
        talk, start, end = fields[0], fields[3], fields[4]
        rest = " ".join(fields[5:])
        if rest.startswith("<"):
            rest = rest.split(">", 1)[1] if ">" in rest else ""
        if rest.strip() == IGNORE:
            continue
        try:
            begin, finish = float(start), float(end)
        except ValueError:
            raise AsrError(f"{stm}:{number}: start/end times {start!r} {end!r} are not numbers") from None
        text = clean_text(rest)
        if finish <= begin or not text:
            continue
        audio = sph_dir / f"{talk}.sph"
        if not audio.is_file():
            raise AsrError(f"{stm}:{number}: audio file not found: {audio}")
        utts.append(Utterance(audio.resolve(), round(finish - begin, 4), text, offset=begin))
    return utts


def read_set(folder: Path) -> list[Utterance]:
    stms = sorted(require(folder / "stm", LAYOUT).glob("*.stm"))
    if not stms:
        raise AsrError(f"{folder / 'stm'}: no .stm files; expected {LAYOUT}")
    sph_dir = require(folder / "sph", LAYOUT)
    return [u for stm in stms for u in parse_stm(stm, sph_dir)]


def prepare_tedlium(data_dir: str | Path, out_dir: str | Path, download: bool = False) -> dict[str, Path]:
    """Manifests ``train``, ``dev`` and ``test`` of segments (offset + duration into each talk)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not (data_dir / "legacy").is_dir() and (data_dir / "TEDLIUM_release-3" / "legacy").is_dir():
        data_dir = data_dir / "TEDLIUM_release-3"
    elif not (data_dir / "legacy").is_dir() and download:
        ensure_downloaded(data_dir, [ARCHIVE], download, LAYOUT)
        data_dir = data_dir / "TEDLIUM_release-3"
    sets = {name: data_dir / "legacy" / name for name in ("train", "dev", "test")}
    if (data_dir / "data" / "stm").is_dir():
        sets["train"] = data_dir / "data"
    paths = {}
    for name, folder in sets.items():
        utts = read_set(require(folder, LAYOUT))
        paths[name] = write_manifest(out_dir / f"{name}.jsonl", utts)
        log.info("tedlium %s: %d segments, %.1f h", name, len(utts), sum(u.duration for u in utts) / 3600)
    return paths
