"""Mozilla Common Voice, any language: read sentences, MP3 clips (32/48 kHz).

Layout (one language of a release, e.g. ``cv-corpus-17.0-2024-03-15/en``):
``<data_dir>/{train,dev,test}.tsv`` (tab-separated with a header; columns ``path`` and
``sentence`` are used) and ``<data_dir>/clips/<path>``. ``clip_durations.tsv`` (newer releases)
saves reading every MP3 header. Common Voice needs an account to download, so only a local copy
is accepted.

Text (:func:`normalize_sentence`, per language): Unicode NFKC; typographic apostrophes become
``'``; lower case with the language's own rules (Turkish and Azerbaijani dotted/dotless i);
punctuation and quotes removed, apostrophes inside words kept (``l'homme``, ``don't``); for
English, digit strings are spelled out as words.
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from pathlib import Path

from asr.corpora.common import durations, require
from asr.data import Utterance, write_manifest
from asr.errors import AsrError
from asr.tokenizer import spell_digits

log = logging.getLogger(__name__)

LAYOUT = "the Common Voice layout <data_dir>/{train,dev,test}.tsv and <data_dir>/clips/"
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
DOTTED_I_LANGUAGES = {"tr", "az", "crh", "tt", "ba"}
SPELL_DIGITS_LANGUAGES = {"en"}


def lowercase(text: str, language: str) -> str:
    if language.split("-")[0] in DOTTED_I_LANGUAGES:
        text = text.replace("I", "\u0131").replace("\u0130", "i")
    return text.lower()


def normalize_sentence(text: str, language: str) -> str:
    """One Common Voice sentence as the recipe trains and scores it."""
    text = unicodedata.normalize("NFKC", text).translate(APOSTROPHES)
    if language.split("-")[0] in SPELL_DIGITS_LANGUAGES:
        text = spell_digits(text)
    text = lowercase(text, language)
    # punctuation and symbols become spaces; marks (M*) stay: they are part of letters in many scripts
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZ" and ch != "'" else ch for ch in text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not apostrophes inside words
    return " ".join(text.split())


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows and not {"path", "sentence"} <= set(rows[0]):
        raise AsrError(f"{path}: expected the columns 'path' and 'sentence' in the header line")
    return rows


def clip_durations(data_dir: Path) -> dict[str, float]:
    """``clip_durations.tsv`` (clip, duration[ms]) when the release has it, else empty."""
    path = data_dir / "clip_durations.tsv"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as f:
        return {row[0]: float(row[1]) / 1000 for row in csv.reader(f, delimiter="\t") if row and row[1][:1].isdigit()}


def guess_language(data_dir: Path, rows: list[dict[str, str]]) -> str:
    locale = rows[0].get("locale") if rows else None
    return locale or data_dir.resolve().name


def prepare_commonvoice(
    data_dir: str | Path,
    out_dir: str | Path,
    language: str | None = None,
    splits: tuple[str, ...] = ("train", "dev", "test"),
) -> dict[str, Path]:
    """Manifests per split tsv (``train``, ``dev``, ``test``; ``validated`` etc. on request)."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    clips = require(data_dir / "clips", LAYOUT)
    known = clip_durations(data_dir)
    paths = {}
    for split in splits:
        tsv = require(data_dir / f"{split}.tsv", LAYOUT)
        rows = read_tsv(tsv)
        lang = language or guess_language(data_dir, rows)
        items = []
        for number, row in enumerate(rows, start=2):
            audio = clips / row["path"]
            if not audio.is_file():
                raise AsrError(f"{tsv}:{number}: audio file not found: {audio}")
            text = normalize_sentence(row["sentence"] or "", lang)
            if text:
                items.append((audio.resolve(), text, known.get(row["path"])))
            else:
                log.warning("%s:%d: sentence is empty after normalization; skipped", tsv, number)
        missing = [p for p, _, d in items if d is None]
        probed = iter(durations(missing, f"commonvoice {split}"))
        utts = [Utterance(p, d if d is not None else next(probed), text) for p, text, d in items]
        paths[split] = write_manifest(out_dir / f"{split}.jsonl", utts)
        log.info("commonvoice %s (%s): %d utterances", split, lang, len(utts))
    return paths
