"""CMU AN4 ("census"): 50 + 10 speakers spelling names, numbers and dates, 16 kHz.

Two local layouts are accepted:

- the original CMU release (``an4_sphere.tar.gz`` or ``an4_raw.bigendian.tar.gz``):
  ``<data_dir>/an4/etc/an4_{train,test}.{fileids,transcription}`` and
  ``<data_dir>/an4/wav/an4{,test}_clstk/<speaker>/<id>.{sph,raw}``. Headerless ``.raw`` files
  (16-bit big-endian, 16 kHz) are converted once to WAV under ``<out_dir>/wav/``. Dev holds out
  every tenth training speaker, so it measures new voices like the test set does.
- deepspeech.pytorch's converted layout: ``<data_dir>/{train,val,test}/an4/{wav,txt}/<id>.{wav,txt}``
  (its own train/val/test split is kept).

Text: the transcripts' tags (``<s>``, ``</s>``, ``<sil>``, ``(id)``) are removed and the words
lower-cased ("rubout g m e f three nine"); numbers are already spelled out.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from asr.corpora.common import Archive, convert_to_wav, durations, ensure_downloaded, require
from asr.data import Utterance, write_manifest
from asr.errors import AsrError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# CMU publishes no checksum for these archives; the computed SHA-256 is logged on download.
ARCHIVE = Archive("http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz", None, "an4")
CMU_LAYOUT = "the CMU AN4 layout <data_dir>/an4/etc/an4_train.fileids, an4_train.transcription, ... and an4/wav/"
DS_LAYOUT = "deepspeech.pytorch's AN4 layout <data_dir>/{train,val,test}/an4/{wav,txt}/"
TAG = re.compile(r"<[^>]*>|\([^)]*\)\s*$")


def clean_transcript(line: str) -> str:
    """``<s> RUBOUT G M E F THREE NINE </s> (an251-fash-b)`` -> ``rubout g m e f three nine``."""
    return " ".join(TAG.sub(" ", line).lower().split())


def read_raw(path: Path) -> tuple[np.ndarray, int]:
    """AN4's headerless audio: 16-bit signed big-endian samples at 16 kHz."""
    data = np.fromfile(path, dtype=">i2")
    if data.size == 0:
        raise AsrError(f"{path}: audio is empty")
    return data.astype(np.float32) / 32768.0, SAMPLE_RATE


def _cmu_split(root: Path, name: str, out_dir: Path) -> list[tuple[Path, str, str]]:
    """(audio path, text, speaker) for ``an4_<name>`` of the CMU layout."""
    etc = root / "etc"
    ids = require(etc / f"an4_{name}.fileids", CMU_LAYOUT).read_text().split()
    lines = [ln for ln in require(etc / f"an4_{name}.transcription", CMU_LAYOUT).read_text().splitlines() if ln.strip()]
    if len(ids) != len(lines):
        raise AsrError(f"{etc / f'an4_{name}.transcription'}: {len(lines)} lines, but an4_{name}.fileids has {len(ids)}")
    items = []
    for file_id, line in zip(ids, lines):
        stem = root / "wav" / file_id
        for ext in (".sph", ".wav", ".raw"):
            if stem.with_suffix(ext).is_file():
                audio = stem.with_suffix(ext)
                break
        else:
            raise AsrError(f"{stem}.sph: not found (nor .wav or .raw); expected {CMU_LAYOUT}")
        if audio.suffix == ".raw":
            audio = convert_to_wav(audio, out_dir / "wav" / f"{audio.stem}.wav", read_raw)
        items.append((audio, clean_transcript(line), file_id.split("/")[-2]))
    return items


def _ds_split(root: Path, name: str) -> list[tuple[Path, str, str]]:
    folder = require(root / name / "an4", DS_LAYOUT)
    wavs = sorted(require(folder / "wav", DS_LAYOUT).glob("*.wav"))
    if not wavs:
        raise AsrError(f"{folder / 'wav'}: no .wav files; expected {DS_LAYOUT}")
    items = []
    for wav in wavs:
        txt = require(folder / "txt" / f"{wav.stem}.txt", DS_LAYOUT)
        items.append((wav, clean_transcript(txt.read_text(encoding="utf-8")), wav.stem.split("-")[1]))
    return items


def _utterances(items: list[tuple[Path, str, str]], desc: str) -> list[Utterance]:
    seconds = durations([p for p, _, _ in items], desc)
    return [Utterance(p.resolve(), d, text) for (p, text, _), d in zip(items, seconds) if text]


def prepare_an4(data_dir: str | Path, out_dir: str | Path, download: bool = False) -> dict[str, Path]:
    """Manifests ``train``, ``dev`` and ``test`` from either layout."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if (data_dir / "train" / "an4").is_dir():
        splits = {name: _ds_split(data_dir, folder) for name, folder in (("train", "train"), ("dev", "val"), ("test", "test"))}
    else:
        if not (data_dir / "an4").is_dir() and download:
            ensure_downloaded(data_dir, [ARCHIVE], download, CMU_LAYOUT)
        root = require(data_dir / "an4", f"{CMU_LAYOUT}, or {DS_LAYOUT}")
        train = _cmu_split(root, "train", out_dir)
        speakers = sorted({spk for _, _, spk in train})
        held_out = set(speakers[9::10])
        splits = {
            "train": [item for item in train if item[2] not in held_out],
            "dev": [item for item in train if item[2] in held_out],
            "test": _cmu_split(root, "test", out_dir),
        }
    paths = {name: write_manifest(out_dir / f"{name}.jsonl", _utterances(items, f"an4 {name}")) for name, items in splits.items()}
    log.info("an4: %s", ", ".join(f"{n} {len(i)}" for n, i in splits.items()))
    return paths
