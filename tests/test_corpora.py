import json

import numpy as np
import pytest
import soundfile as sf

from asr.corpora.fsdd import DIGIT_WORDS, prepare_fsdd, prepare_fsdd_speaker
from asr.corpora.synth import DEV_VARIANTS, TEST_VARIANTS, TRAIN_VARIANTS, SynthItem, plan_corpus, prepare_synth, synthesize
from asr.corpora.voices import FESTIVAL_VOICES, FLITE_VOICES, Request, espeak_voice
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
    a, b = plan_corpus(600, seed=7), plan_corpus(600, seed=7)
    assert a == b and a != plan_corpus(600, seed=8)
    speakers = {s: {i.request.voice.speaker for i in a if i.split == s} for s in ("train", "dev", "test")}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["dev"])
    assert "rms" in speakers["test"] and {"kal", "ked", "awb", "slt"} <= speakers["train"]
    variants = {s: {i.request.voice.name.split("+")[1] for i in a if i.split == s and i.request.voice.engine == "espeak-ng"}
                for s in ("train", "dev", "test")}
    assert variants["train"] <= set(TRAIN_VARIANTS) and variants["test"] <= set(TEST_VARIANTS)
    assert variants["dev"] <= set(DEV_VARIANTS) and not (set(TRAIN_VARIANTS) & set(TEST_VARIANTS))
    assert {i.request.voice.engine for i in a if i.split == "train"} == {"espeak-ng", "flite", "festival"}
    assert {len(i.request.text.split()) > 0 for i in a} == {True}
    assert len({(i.request.rate, i.request.pitch) for i in a}) > 500  # every utterance its own rate and pitch
    assert any(len(i.request.text.split()) == 1 and i.request.text in DIGIT_WORDS for i in a)  # digits alone too


def test_prepare_synth_writes_speech_and_manifests(tmp_path):
    import shutil

    if not all(shutil.which(e) for e in ("espeak-ng", "flite", "festival")):
        pytest.skip("the speech synthesizers are not installed (tools/setup.sh installs them)")
    paths = prepare_synth(tmp_path, size=30, seed=1)
    assert set(paths) == {"train", "dev", "test"}
    utts = read_manifest(paths["train"])
    assert len(utts) == 25
    for utt in utts:
        info = sf.info(utt.audio_filepath)
        assert info.samplerate == 16000 and abs(info.duration - utt.duration) < 1e-3 and utt.duration > 0.3
    voices = (tmp_path / "voices.txt").read_text().splitlines()
    assert voices[0].split("\t") == ["key", "engine", "voice", "rate", "pitch", "word_gap"] and len(voices) == 31


ALL_VOICES = [espeak_voice("en-us", "m3"), espeak_voice("en-gb", "f2"), *FLITE_VOICES, *FESTIVAL_VOICES]


@pytest.mark.parametrize("voice", ALL_VOICES, ids=lambda v: f"{v.engine}-{v.name}")
def test_each_synthesizer_speaks_at_16_khz_and_slower_when_asked(voice, tmp_path):
    import shutil

    if shutil.which(voice.engine) is None:
        pytest.skip(f"{voice.engine} is not installed")
    text = "three four seven nine"
    items = [SynthItem("test", f"r{rate}", Request(voice, text, rate)) for rate in (0.8, 1.25)]
    slow, fast = synthesize(items, tmp_path)
    for utt in (slow, fast):
        info = sf.info(utt.audio_filepath)
        assert info.samplerate == 16000 and info.channels == 1
        samples, _ = sf.read(utt.audio_filepath)
        assert 0.01 < float(np.sqrt(np.mean(samples**2))) < 0.5  # speech, not silence or clipping
    assert 0.8 < fast.duration < 4.0 and slow.duration / fast.duration > 1.25


def test_a_missing_synthesizer_is_one_line_naming_its_package(monkeypatch):
    import shutil

    from asr.corpora import voices

    real = shutil.which
    monkeypatch.setattr(voices.shutil, "which", lambda name: None if name == "flite" else real(name))
    with pytest.raises(AsrError) as caught:
        voices.require_engines(FLITE_VOICES)
    assert str(caught.value) == "flite is not installed (Debian: apt-get install flite, or run tools/setup.sh)"
    monkeypatch.setattr(voices, "_festival_voice_dirs", lambda name: [])
    monkeypatch.setattr(voices.shutil, "which", real)
    if real("festival"):
        with pytest.raises(AsrError, match="festival voice ked_diphone is not installed .*festvox-kdlpc16k"):
            voices.require_engines([v for v in FESTIVAL_VOICES if v.name == "ked_diphone"])


def test_every_espeak_variant_of_the_corpus_is_installed_and_an_unknown_one_is_an_error():
    import shutil

    from asr.corpora import voices

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    voices.require_engines([espeak_voice("en-us", v) for v in TRAIN_VARIANTS + DEV_VARIANTS + TEST_VARIANTS])
    with pytest.raises(AsrError, match=r"^espeak-ng has no voice variant nosuch \(espeak-ng --voices=variant"):
        voices.require_engines([espeak_voice("en-us", "m3"), espeak_voice("en-gb", "nosuch")])


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
