"""Per-speaker normalization: utterances of one speaker share the statistics of all of them."""

import json

import pytest
import torch

from asr.audio import load_audio
from asr.corpora.voices import espeak_voice
from asr.data import SpeechDataset, Utterance, read_manifest, write_manifest
from asr.errors import AsrError, ConfigError, ManifestError
from asr.features import FeatureConfig, FeatureExtractor, NormMode
from asr.model import AcousticModel, ModelConfig
from asr.tokenizer import CharTokenizer, TextNormalization
from asr.transcribe import Recognizer
from conftest import speak, write_audio


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory):
    """Two espeak-ng voices saying single digits (the short utterances where an utterance's own
    statistics are mostly its word), and one file with no speaker."""
    work = tmp_path_factory.mktemp("speakers")
    utts = []
    for name, voice in (("en-us", espeak_voice("en-us", "m3")), ("en-gb-x-rp", espeak_voice("en-gb-x-rp", "f2"))):
        for word in ("one", "seven", "three"):
            path = speak(word, work / f"{name}-{word}.wav", voice=voice)
            utts.append(Utterance(path, load_audio(path, 16000).numel() / 16000, word, speaker=name))
    loner = write_audio(work / "tone.wav", seconds=0.6)
    utts.append(Utterance(loner, 0.6, "one"))
    return utts


def utterance_extractor() -> FeatureExtractor:
    return FeatureExtractor(FeatureConfig(normalization=NormMode.utterance))


def small_recognizer() -> Recognizer:
    """An untrained 1 × 16 BiLSTM (seeded, so its outputs are fixed) over utterance-normalized features."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(sorted("onesvthr "), TextNormalization())
    model = AcousticModel(ModelConfig(num_layers=1, hidden_size=16), 80, tokenizer.vocab_size).eval()
    return Recognizer(model, utterance_extractor(), tokenizer, "cpu")


def saved(recognizer: Recognizer, path):
    """``recognizer``'s model written as ``asr train`` writes model.pt."""
    from asr.checkpoint import inference_state, save_checkpoint

    return save_checkpoint(inference_state(recognizer.model, recognizer.extractor, recognizer.tokenizer), path)


def pooled(extractor: FeatureExtractor, utts: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.cat([extractor.log_mel(load_audio(u.audio_filepath, 16000)).double() for u in utts])
    return frames.mean(0).float(), frames.std(0, unbiased=False).float()


def test_manifest_speaker_round_trips_and_a_bad_one_names_its_line(tmp_path, two_speakers):
    path = write_manifest(tmp_path / "m.jsonl", two_speakers)
    assert [u.speaker for u in read_manifest(path)] == [u.speaker for u in two_speakers]
    assert "speaker" not in json.loads(path.read_text().splitlines()[-1])  # absent stays absent
    bad = tmp_path / "bad.jsonl"
    record = two_speakers[0].to_json()
    for value in ("", 7):
        bad.write_text(json.dumps({**record, "speaker": value}) + "\n")
        with pytest.raises(ManifestError, match=r"bad\.jsonl:1: 'speaker' must be a non-empty string"):
            read_manifest(bad)


def test_each_speaker_is_normalized_by_all_their_utterances(two_speakers):
    extractor = utterance_extractor()
    dataset = SpeechDataset(two_speakers, extractor)
    dataset.use_speaker_stats()
    assert sorted(dataset.norm_stats) == list(range(len(two_speakers) - 1))  # the last has no speaker
    for speaker in ("en-us", "en-gb-x-rp"):
        own = [u for u in two_speakers if u.speaker == speaker]
        mean, std = pooled(extractor, own)
        for index, utt in enumerate(two_speakers):
            if utt.speaker == speaker:
                expected = (extractor.log_mel(load_audio(utt.audio_filepath, 16000)) - mean) / std
                assert torch.allclose(dataset[index].features, expected, atol=1e-4)
                # a one-word utterance's own statistics differ: its features are not those
                assert not torch.allclose(dataset[index].features, extractor(load_audio(utt.audio_filepath, 16000)),
                                          atol=0.1)
    loner = dataset[len(two_speakers) - 1].features  # no speaker: its own statistics, as before
    assert torch.allclose(loner, extractor(load_audio(two_speakers[-1].audio_filepath, 16000)))


def test_recognizer_batches_agree_with_each_speaker_alone(two_speakers):
    recognizer = small_recognizer()
    together = recognizer.recognize_all(two_speakers, keep_log_probs=True, speaker_norm=True)
    plain = recognizer.recognize_all(two_speakers, keep_log_probs=True)
    for speaker in ("en-us", "en-gb-x-rp"):
        indices = [i for i, u in enumerate(two_speakers) if u.speaker == speaker]
        alone = recognizer.recognize_all([two_speakers[i] for i in indices], keep_log_probs=True, speaker_norm=True)
        for i, transcript in zip(indices, alone):
            assert torch.allclose(together[i].log_probs, transcript.log_probs, atol=1e-5)
            assert not torch.allclose(together[i].log_probs, plain[i].log_probs, atol=1e-3)
    assert torch.allclose(together[-1].log_probs, plain[-1].log_probs, atol=1e-5)


def test_speaker_norm_without_any_speaker_or_readable_audio_keeps_each_utterances_own(tmp_path, two_speakers):
    from asr.speaker_norm import SpeakerNorm

    extractor = utterance_extractor()
    unlabelled = [Utterance(u.audio_filepath, u.duration, u.text) for u in two_speakers]
    dataset = SpeechDataset(unlabelled, extractor)
    dataset.use_speaker_stats(SpeakerNorm.labels)  # no labels at all: nothing to pool
    assert dataset.norm_stats == {}
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not audio")
    dataset = SpeechDataset([Utterance(broken, 1.0, "one", speaker="x")], extractor)
    for mode in SpeakerNorm:
        dataset.use_speaker_stats(mode)
        assert dataset.norm_stats == {}  # unreadable: reported when the utterance itself is read


def test_a_globally_normalized_model_refuses_speaker_normalization(two_speakers):
    tokenizer = CharTokenizer(sorted("one "), TextNormalization())
    model = AcousticModel(ModelConfig(num_layers=1, hidden_size=8), 80, tokenizer.vocab_size)
    recognizer = Recognizer(model, FeatureExtractor(FeatureConfig()), tokenizer, "cpu")
    with pytest.raises(AsrError, match="needs a model trained with features.normalization=utterance; this one uses global"):
        recognizer.evaluate(two_speakers, speaker_norm=True)


# ---- streaming: one speaker throughout ------------------------------------------------------


def test_streaming_features_pool_the_speakers_earlier_segments(two_speakers):
    from asr.features import RunningStats, StreamingFeatures

    extractor = utterance_extractor()
    earlier, current = [extractor.log_mel(load_audio(u.audio_filepath, 16000)) for u in two_speakers[:2]]
    speaker = RunningStats()
    speaker.add(earlier)
    stream = StreamingFeatures(extractor, speaker)
    waveform = load_audio(two_speakers[1].audio_filepath, 16000)
    for start in range(0, waveform.numel(), 1600):
        stream.accept(waveform[start : start + 1600])
    stream.finish()
    both = torch.cat([earlier, current]).double()
    mean, std = both.mean(0).float(), both.std(0, unbiased=False).float()
    assert torch.allclose(stream.utterance(), (current - mean) / std, atol=1e-4)
    alone = StreamingFeatures(extractor)
    alone.accept(waveform)
    alone.finish()
    assert torch.allclose(alone.utterance(), extractor(waveform), atol=1e-5)  # no speaker: as before


def test_a_stream_with_speaker_norm_grows_the_speakers_statistics_segment_by_segment(two_speakers):
    recognizer = small_recognizer()
    streamer = recognizer.streamer(speaker_norm=True)
    pause = torch.zeros(16000)  # 1 s of silence ends a segment (0.6 s by default)
    counts = []
    for utt in two_speakers[:3]:  # one voice: three segments
        streamer.accept(torch.cat([load_audio(utt.audio_filepath, 16000), pause]).numpy())
        counts.append(streamer.speaker.count)
    assert counts[0] > 0 and counts[0] < counts[1] < counts[2]  # each segment with speech adds its frames
    assert streamer.features.speaker is streamer.speaker  # the next segment starts from them
    with pytest.raises(ConfigError, match="speaker normalization needs a model trained with features.normalization=utterance"):
        Recognizer(recognizer.model, FeatureExtractor(FeatureConfig()), recognizer.tokenizer, "cpu").streamer(speaker_norm=True)


def test_transcribe_speaker_norm_treats_the_inputs_as_one_speaker(tmp_path, two_speakers):
    from conftest import run_cli

    recognizer = small_recognizer()
    path = saved(recognizer, tmp_path / "model.pt")
    files = [str(u.audio_filepath) for u in two_speakers[:3]]
    done = run_cli("transcribe", str(path), *files, "--speaker-norm", "--format", "json")
    assert done.returncode == 0, done.stderr
    texts = [json.loads(line)["text"] for line in done.stdout.splitlines()]  # JSON lines, one per input
    one = [Utterance(u.audio_filepath, u.duration, "", speaker="x") for u in two_speakers[:3]]
    assert texts == [t.text for t in recognizer.recognize_all(one, speaker_norm=True)]
    alone = run_cli("transcribe", str(path), *files, "--format", "json")
    assert [json.loads(line)["text"] for line in alone.stdout.splitlines()] != texts  # each by itself: other outputs
    nearest = run_cli("transcribe", str(path), *files, "--speaker-norm", "nearest", "--pool-seconds", "1", "--format", "json")
    assert nearest.returncode == 0, nearest.stderr
    unlabelled = [Utterance(u.audio_filepath, u.duration, "") for u in two_speakers[:3]]
    expected = recognizer.recognize_all(unlabelled, speaker_norm="nearest", pool_seconds=1.0)
    assert [json.loads(line)["text"] for line in nearest.stdout.splitlines()] == [t.text for t in expected]


# ---- no labels: each utterance pools with the nearest in voice ------------------------------


def test_nearest_pools_start_with_the_utterance_and_hold_the_asked_frames():
    from asr.speaker_norm import FrameSums, pool_by_nearest

    generator = torch.Generator().manual_seed(0)
    # two channels 6 units apart in every band; 300 utterances so that rows span two blocks
    features = [torch.randn(int(frames), 4, generator=generator) + 6.0 * (i % 2)
                for i, frames in enumerate(torch.randint(20, 60, (300,), generator=generator))]
    sums = FrameSums.of(features)
    pools = pool_by_nearest(sums, frames=500)
    for index, pool in enumerate(pools):
        assert pool[0] == index and len(set(pool.tolist())) == len(pool)
        assert {int(j) % 2 for j in pool} == {index % 2}  # only its own channel
        held = sums.count[pool].cumsum(0)
        assert held[-1] >= 500 and (len(pool) == 1 or held[-2] < 500)  # just enough, not more
    everything = pool_by_nearest(sums, frames=1e9)
    assert all(sorted(pool.tolist()) == list(range(300)) for pool in everything)
    mean, std = sums.pooled(pools[0])
    frames = torch.cat([features[int(j)] for j in pools[0]]).double()
    assert torch.allclose(mean, frames.mean(0).float(), atol=1e-5)
    assert torch.allclose(std, frames.std(0, unbiased=False).float(), atol=1e-5)


def test_nearest_pools_on_real_speakers_are_their_own_voice(fsdd_dir):
    from asr.speaker_norm import FrameSums, pool_by_nearest

    extractor = utterance_extractor()
    clips = [(speaker, fsdd_dir / "recordings" / f"{digit}_{speaker}_{take}.wav")
             for speaker in ("nicolas", "theo") for digit in range(10) for take in range(5)]
    sums = FrameSums.of(extractor.log_mel(load_audio(path, 16000)) for _, path in clips)
    pools = pool_by_nearest(sums, frames=500)  # 5 s: about 13 clips of the 50 per speaker, all ten digits
    shares = [sum(clips[j][0] == clips[i][0] for j in pool.tolist()) / len(pool) for i, pool in enumerate(pools)]
    assert sum(shares) / len(shares) > 0.95  # a random pool would hold 50 % of the utterance's speaker


def test_dataset_nearest_normalization_between_its_extremes(two_speakers):
    from asr.speaker_norm import SpeakerNorm

    extractor = utterance_extractor()
    dataset = SpeechDataset(two_speakers, extractor)
    dataset.use_speaker_stats(SpeakerNorm.nearest, seconds=0.0)  # a pool of itself alone: its own statistics
    assert sorted(dataset.norm_stats) == list(range(len(two_speakers)))  # labels or not
    for index, utt in enumerate(two_speakers):
        assert torch.allclose(dataset[index].features, extractor(load_audio(utt.audio_filepath, 16000)), atol=1e-4)
    dataset.use_speaker_stats(SpeakerNorm.nearest, seconds=3600.0)  # more than all of them: one pool
    mean, std = pooled(extractor, two_speakers)
    for index, utt in enumerate(two_speakers):
        expected = (extractor.log_mel(load_audio(utt.audio_filepath, 16000)) - mean) / std
        assert torch.allclose(dataset[index].features, expected, atol=1e-4)


def test_evaluate_speaker_norm_nearest_from_the_cli_and_a_bad_mode(tmp_path, two_speakers):
    from conftest import run_cli

    recognizer = small_recognizer()
    path = saved(recognizer, tmp_path / "model.pt")
    manifest = write_manifest(tmp_path / "m.jsonl", two_speakers)
    done = run_cli("evaluate", str(path), str(manifest), "--speaker-norm", "nearest", "--report", str(tmp_path / "r.jsonl"))
    assert done.returncode == 0, done.stderr
    rates = recognizer.evaluate(two_speakers, speaker_norm="nearest")
    lines = done.stdout.splitlines()  # each labelled speaker's own rates, then all of them
    by_speaker = rates.by_speaker()
    assert sorted(by_speaker) == ["en-gb-x-rp", "en-us"]
    for speaker, own in by_speaker.items():
        assert f"speaker {speaker}: 3 utterances, {own.summary()}" in lines
    assert lines[-1] == rates.summary() and len(rates.utterances) == 7
    expected = recognizer.recognize_all(two_speakers, speaker_norm="nearest")
    report = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["key"]: r["hypothesis"] for r in report} == {t.key: t.text for t in expected}
    own = recognizer.recognize_all(two_speakers)
    assert [t.text for t in own] != [t.text for t in expected]  # pooled statistics change the outputs
    bad = run_cli("evaluate", str(path), str(manifest), "--speaker-norm", "nearby")
    assert bad.returncode == 2 and "invalid choice: 'nearby'" in bad.stderr
    with pytest.raises(ConfigError, match=r"speaker normalization 'nearby': use one of \['labels', 'nearest'\]"):
        recognizer.evaluate(two_speakers, speaker_norm="nearby")
    with pytest.raises(ConfigError, match=r"a pool of -1.0 s of audio; it must be 0 or more"):
        recognizer.evaluate(two_speakers, speaker_norm="nearest", pool_seconds=-1.0)
    short = run_cli("evaluate", str(path), str(manifest), "--speaker-norm", "nearest", "--pool-seconds", "0")
    own = recognizer.evaluate(two_speakers)  # a pool of the utterance alone: its own statistics
    assert short.returncode == 0 and short.stdout.splitlines()[-1] == own.summary()
