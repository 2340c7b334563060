import json

import numpy as np
import pytest
import soundfile as sf

from asr.corpora.fsdd import DIGIT_WORDS, prepare_fsdd, prepare_fsdd_speaker
from asr.corpora.synth import DEV_VARIANTS, TEST_VARIANTS, TRAIN_VARIANTS, plan_corpus, prepare_synth
from asr.data import read_manifest
from asr.errors import AsrError


def fake_fsdd(root, speakers=("ann", "bob"), takes=12):
    """FSDD layout whose every sample equals (take + 1) / 100, so a clip's take is audible."""
    rec = root / "recordings"
    rec.mkdir(parents=True)
    for speaker in speakers:
        for digit in range(10):
            for take in range(takes):
                samples = np.full(800 + 40 * digit, (take + 1) / 100, dtype=np.float32)
                sf.write(rec / f"{digit}_{speaker}_{take}.wav", samples, 8000, subtype="FLOAT")
    return root


def test_synth_plan_is_deterministic_and_holds_test_voices_out():
    a, b = plan_corpus(300, seed=7), plan_corpus(300, seed=7)
    assert a == b and a != plan_corpus(300, seed=8)
    variants = {s: {i.voice.split("+")[1] for i in a if i.split == s} for s in ("train", "dev", "test")}
    assert variants["train"] <= set(TRAIN_VARIANTS) and variants["test"] <= set(TEST_VARIANTS)
    assert variants["dev"] <= set(DEV_VARIANTS) and not (set(TRAIN_VARIANTS) & set(TEST_VARIANTS))
    assert {len(i.text.split()) > 0 for i in a} == {True}


def test_prepare_synth_writes_speech_and_manifests(tmp_path):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    paths = prepare_synth(tmp_path, size=20, seed=1)
    assert set(paths) == {"train", "dev", "test"}
    utts = read_manifest(paths["train"])
    assert len(utts) == 17
    for utt in utts[:3]:
        info = sf.info(utt.audio_filepath)
        assert info.samplerate == 16000 and abs(info.duration - utt.duration) < 1e-3 and utt.duration > 0.3


def test_prepare_fsdd_splits_by_take_and_builds_connected_strings(tmp_path):
    data = fake_fsdd(tmp_path / "fsdd")
    counts = {"train": 6, "dev": 3, "test": 4}
    paths = prepare_fsdd(data, tmp_path / "out", seed=0, connected=counts)
    assert {"train", "dev", "isolated_test", "connected_test"} <= set(paths)
    isolated_test = read_manifest(paths["isolated_test"])
    assert len(isolated_test) == 2 * 10 * 5
    assert all(int(u.audio_filepath.stem.split("_")[2]) < 5 for u in isolated_test)
    assert {u.text for u in isolated_test} == set(DIGIT_WORDS)
    for split, take_range in {"test": (0, 5), "dev": (5, 10), "train": (10, 12)}.items():
        strings = read_manifest(tmp_path / "out" / f"connected_{split}.jsonl")
        assert len(strings) == counts[split]
        for utt in strings:
            samples, _ = sf.read(utt.audio_filepath)
            takes = set(np.round(samples[samples != 0] * 100).astype(int) - 1)
            assert takes and all(take_range[0] <= t < take_range[1] for t in takes), (split, takes)
            assert 3 <= len(utt.text.split()) <= 7
    alignment = json.loads((tmp_path / "out" / "connected_test.alignments.jsonl").read_text().splitlines()[0])
    words = alignment["words"]
    assert [w["word"] for w in words] == alignment["text"].split()
    assert all(a["end"] < b["start"] for a, b in zip(words, words[1:]))  # pauses between digits
    assert len(read_manifest(paths["train"])) == 2 * 10 * 2 + counts["train"]


def test_prepare_fsdd_speaker_holds_one_speaker_out(tmp_path):
    data = fake_fsdd(tmp_path / "fsdd", speakers=("ann", "bob", "theo"))
    paths = prepare_fsdd_speaker(data, tmp_path / "out", held_out="theo", connected={"train": 2, "dev": 2, "test": 2})
    test_speakers = {u.audio_filepath.stem.split("_")[1] for u in read_manifest(paths["isolated_test"])}
    train_speakers = {u.audio_filepath.stem.split("_")[1] for u in read_manifest(paths["isolated_train"])}
    assert test_speakers == {"theo"} and train_speakers == {"ann", "bob"}


def test_wrong_fsdd_layout_names_what_is_missing(tmp_path):
    with pytest.raises(AsrError, match="recordings: not found; expected the FSDD layout"):
        prepare_fsdd(tmp_path, tmp_path / "out")


def test_real_fsdd_layout_is_read(fsdd_dir):
    from asr.corpora.fsdd import find_clips

    clips = find_clips(fsdd_dir)
    assert len(clips) == 2500 and {c.speaker for c in clips} == {"george", "jackson", "nicolas", "theo", "yweweler"}
