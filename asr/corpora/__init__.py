"""Corpus preparation: one module per corpus, each with ``prepare_<corpus>()`` returning the
paths of the manifests it wrote. ``asr prepare <corpus>`` and the recipes call these."""

from __future__ import annotations

from pathlib import Path

from asr.errors import AsrError


def prepare_corpus(name: str, data_dir: str | None, out_dir: str, seed: int = 0, size: int | None = None) -> dict[str, Path]:
    if name == "synth":
        from asr.corpora.synth import prepare_synth

        return prepare_synth(out_dir, num_utterances=size or 3000, seed=seed)
    if data_dir is None:
        raise AsrError(f"prepare {name}: --data-dir is required (the local copy of the corpus)")
    from asr.corpora.fsdd import prepare_fsdd, prepare_fsdd_speaker

    if name == "fsdd":
        return prepare_fsdd(data_dir, out_dir, seed=seed)
    if name == "fsdd-speaker":
        return prepare_fsdd_speaker(data_dir, out_dir, seed=seed)
    raise AsrError(f"unknown corpus {name!r}")
