"""Corpus preparation: one module per corpus, each with ``prepare_<corpus>()`` returning the
paths of the manifests it wrote. ``asr prepare <corpus>`` and the recipes call these."""

from __future__ import annotations

import inspect
from importlib import import_module
from pathlib import Path
from typing import Any

from asr.errors import AsrError

PREPARERS = {
    "synth": "asr.corpora.synth:prepare_synth",
    "yesno": "asr.corpora.yesno:prepare_yesno",
    "fsdd": "asr.corpora.fsdd:prepare_fsdd",
    "fsdd-speaker": "asr.corpora.fsdd:prepare_fsdd_speaker",
    "fsdd-clips": "asr.corpora.fsdd:prepare_fsdd_clips",
    "an4": "asr.corpora.an4:prepare_an4",
    "librispeech": "asr.corpora.librispeech:prepare_librispeech",
    "commonvoice": "asr.corpora.commonvoice:prepare_commonvoice",
    "tedlium": "asr.corpora.tedlium:prepare_tedlium",
    "ljspeech": "asr.corpora.ljspeech:prepare_ljspeech",
}


def prepare_corpus(name: str, data_dir: str | None, out_dir: str, **options: Any) -> dict[str, Path]:
    """Run ``prepare_<name>`` with the options it takes; ``None`` options mean its default.

    Raises:
        AsrError: for an unknown corpus, a missing ``data_dir`` or an option the corpus lacks.
    """
    if name not in PREPARERS:
        raise AsrError(f"unknown corpus {name!r} (known: {', '.join(PREPARERS)})")
    module, function = PREPARERS[name].split(":")
    prepare = getattr(import_module(module), function)
    accepted = inspect.signature(prepare).parameters
    given = {key: value for key, value in options.items() if value is not None and value is not False}
    for key in given:
        if key not in accepted:
            raise AsrError(f"prepare {name}: --{key.replace('_', '-')} does not apply to this corpus")
    if "data_dir" in accepted:
        if data_dir is None:
            raise AsrError(f"prepare {name}: --data-dir is required (the local copy of the corpus)")
        given["data_dir"] = data_dir
    return prepare(out_dir=out_dir, **given)
