"""Property-based fuzzing (hypothesis) of the three places user bytes enter: the audio loader,
the manifest reader and config validation. 1,400 generated cases in all; the only exceptions
allowed out are the project's own (AsrError subclasses), which the CLI prints as one line.
Derandomized, so CI runs the same cases every time."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.audio import audio_info, load_audio
from asr.config import load_train_config
from asr.data import read_manifest
from asr.errors import AudioError, ConfigError, ManifestError

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_wav() -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(np.arange(800) / 5)).astype(np.float32), 8000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


VALID_WAV = _valid_wav()


def mutated_wav() -> st.SearchStrategy[bytes]:
    """A real WAV with some bytes overwritten (mostly in the header) and maybe cut short."""
    edits = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1, max_size=6)
    return st.builds(lambda e, cut: _apply(e, cut), edits, st.integers(0, len(VALID_WAV)))


def _apply(edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(VALID_WAV)
    for position, value in edits:
        data[position] = value
    return bytes(data[: max(cut, 1)])


def check_audio(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        rate, duration = audio_info(path)
        waveform = load_audio(path, 16000)
    except AudioError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert rate > 0 and duration >= 0
    assert waveform.ndim == 1 and bool(np.isfinite(waveform.numpy()).all())


@settings(FUZZ, max_examples=300)
@given(data=st.binary(max_size=600))
def test_fuzz_audio_loader_arbitrary_bytes(tmp_path, data):
    check_audio(tmp_path / "fuzz.wav", data)


@settings(FUZZ, max_examples=400)
@given(data=mutated_wav())
def test_fuzz_audio_loader_mutated_wav(tmp_path, data):
    check_audio(tmp_path / "fuzz.wav", data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
manifest_records = st.fixed_dictionaries(
    {},
    optional={"audio_filepath": st.sampled_from(["a.wav", "", "missing.wav", 5, None]) | json_values,
              "duration": st.sampled_from([1.0, 0, -1, math.inf, "1.0", True]) | json_values,
              "text": st.text(max_size=20) | json_values,
              "offset": st.sampled_from([0.0, -1.0, 0.5, "x"]) | json_values},
)
manifest_lines = st.one_of(
    manifest_records.map(lambda r: json.dumps(r, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t),
)


@settings(FUZZ, max_examples=400)
@given(lines=st.lists(manifest_lines, max_size=5), skip_bad=st.booleans())
def test_fuzz_manifest_reader(tmp_path, lines, skip_bad):
    (tmp_path / "a.wav").write_bytes(VALID_WAV)
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems: list[str] | None = [] if skip_bad else None
    try:
        utts = read_manifest(path, problems=problems)
    except ManifestError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    for utt in utts:
        assert utt.audio_filepath.is_file() and utt.duration > 0 and math.isfinite(utt.duration)
        assert isinstance(utt.text, str) and (utt.offset is None or utt.offset >= 0)


CONFIG_KEYS = ["model.hidden_size", "model.num_layers", "model.dropout", "model.cell", "model.subsampling_factor",
               "optim.lr", "optim.warmup_steps", "optim.name", "data.max_frames_per_batch", "data.max_duration",
               "features.n_mels", "features.hop_ms", "features.sample_rate", "tokenizer.kind", "tokenizer.vocab_size",
               "trainer.epochs", "trainer.precision", "data.length_jitter", "augment.speed_factors", "decode.beam_size", "model.nonexistent",
               "nonexistent.key", "trainer.max_steps", "tokenizer.digits"]
config_values = st.one_of(
    st.integers(-5, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["abc", "lstm", "gru", "bpe", "null", "[]", "[0.9,1.0]", "[-1]", "true", "''", "spell", "fp16"]),
)


@settings(FUZZ, max_examples=300)
@given(overrides=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), config_values), max_size=3, unique_by=lambda kv: kv[0]))
def test_fuzz_config_validation(overrides):
    args = ["data.train_manifest=a.jsonl", "data.dev_manifest=b.jsonl"] + [f"{k}={v}" for k, v in overrides]
    try:
        cfg = load_train_config(args)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert cfg.model.hidden_size > 0 and cfg.optim.lr > 0 and math.isfinite(cfg.optim.lr)
