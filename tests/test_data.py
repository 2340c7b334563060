import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio_cache import AudioCache
from asr.augment import AugmentConfig
from asr.data import BucketBatchSampler, ItemKey, SpeechDataset, Utterance, collate, read_manifest, write_manifest
from asr.errors import AudioError, ConfigError, ManifestError
from asr.features import FeatureConfig, FeatureExtractor
from asr.tokenizer import TokenizerConfig, train_tokenizer
from conftest import tone, write_audio


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    write_audio(tmp_path / "corpus" / "wav" / "a.wav", seconds=0.5)
    manifest = tmp_path / "corpus" / "m.jsonl"
    manifest.write_text(
        json.dumps({"audio_filepath": "wav/a.wav", "duration": 0.5, "text": "hi"}) + "\n\n"
        + json.dumps({"audio_filepath": "wav/a.wav", "duration": 0.2, "text": "x", "offset": 0.1}) + "\n"
    )
    utts = read_manifest(manifest)
    assert [u.audio_filepath for u in utts] == [tmp_path / "corpus" / "wav" / "a.wav"] * 2
    assert utts[1].offset == 0.1 and utts[1].duration == 0.2


def test_write_manifest_round_trips_and_leaves_no_temporary_file(tmp_path):
    wav = write_audio(tmp_path / "d" / "a.wav", seconds=0.3)
    utts = [Utterance(wav, 0.3, "hello"), Utterance(wav, 0.1, "there", offset=0.2)]
    path = write_manifest(tmp_path / "d" / "m.jsonl", utts)
    assert read_manifest(path) == utts
    assert json.loads(path.read_text().splitlines()[0])["audio_filepath"] == "a.wav"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.wav", "m.jsonl"]


def test_write_manifest_with_relative_paths_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_audio(tmp_path / "corpus" / "wav" / "a.wav", seconds=0.3)
    write_audio(tmp_path / "elsewhere.wav", seconds=0.3)
    utts = [Utterance(Path("corpus/wav/a.wav"), 0.3, "a"), Utterance(Path("elsewhere.wav"), 0.3, "b")]
    path = write_manifest(Path("corpus/m.jsonl"), utts)
    lines = [json.loads(line)["audio_filepath"] for line in path.read_text().splitlines()]
    assert lines == ["wav/a.wav", str(tmp_path / "elsewhere.wav")]
    assert [u.audio_filepath for u in read_manifest(path)] == [tmp_path / "corpus/wav/a.wav", tmp_path / "elsewhere.wav"]


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", "invalid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"duration": 1, "text": "a"}', "missing key 'audio_filepath'"),
        ('{"audio_filepath": "a.wav", "text": "a"}', "missing key 'duration'"),
        ('{"audio_filepath": "a.wav", "duration": 1}', "missing key 'text'"),
        ('{"audio_filepath": "a.wav", "duration": -1, "text": "a"}', "'duration' must be a positive number"),
        ('{"audio_filepath": "a.wav", "duration": "1", "text": "a"}', "'duration' must be a positive number"),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": 3}', "'text' must be a string"),
        ('{"audio_filepath": "missing.wav", "duration": 1, "text": "a"}', "audio file not found"),
    ],
)
def test_bad_manifest_lines_name_file_and_line(tmp_path, line, message):
    write_audio(tmp_path / "a.wav", seconds=0.2)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav", "duration": 0.2, "text": "ok"}\n' + line + "\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest)
    assert str(err.value).startswith(f"{manifest}:2: ") and message in str(err.value)


def test_missing_and_empty_manifests(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(tmp_path / "e.jsonl")


def test_sampler_respects_the_frame_cap_and_yields_every_utterance_once_per_epoch():
    lengths = [int(x) for x in torch.randint(50, 1000, (500,), generator=torch.Generator().manual_seed(0))]
    sampler = BucketBatchSampler(lengths, max_frames=4000, num_buckets=8, seed=1)
    seen_orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = [[key.index for key in batch] for batch in sampler]
        assert all(max(lengths[i] for i in b) * len(b) <= 4000 for b in batches)
        assert Counter(i for b in batches for i in b) == Counter(range(500))
        assert len(batches) == len(sampler)
        seen_orders.append(batches)
    assert seen_orders[0] != seen_orders[1]  # buckets reshuffled each epoch
    again = BucketBatchSampler(lengths, max_frames=4000, num_buckets=8, seed=1)
    again.set_epoch(1)
    assert [[k.index for k in b] for b in again] == seen_orders[1]  # deterministic in (seed, epoch)
    again.set_epoch(1, start_batch=5)
    assert [[k.index for k in b] for b in again] == seen_orders[1][5:]


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    return 1 - sum(lengths) / sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_sampler_keeps_padding_low():
    lengths = [int(x) for x in torch.randint(100, 1100, (2000,), generator=torch.Generator().manual_seed(0))]
    shares = {j: padding_share(lengths, BucketBatchSampler(lengths, 5000, 10, length_jitter=j).batches(0))
              for j in (0.0, 0.05, 0.2, 0.99)}
    assert shares[0.0] < 0.01 < shares[0.05] < 0.035 < shares[0.2] < 0.055 < shares[0.99]  # 0.4, 2.8, 5.1, 5.9 % (seeded)


def test_length_jitter_varies_batch_membership_and_zero_fixes_it():
    lengths = [100 + 2 * int(x) for x in torch.randperm(500, generator=torch.Generator().manual_seed(0))]  # no ties
    def memberships(jitter: float, epoch: int) -> set[frozenset[int]]:
        return {frozenset(b) for b in BucketBatchSampler(lengths, 5000, 4, length_jitter=jitter).batches(epoch)}
    assert memberships(0.05, 0) != memberships(0.05, 1)
    assert memberships(0.0, 0) == memberships(0.0, 1)


def test_an_utterance_longer_than_the_cap_is_refused():
    with pytest.raises(ValueError, match="exceed the batch frame cap"):
        BucketBatchSampler([10, 5000], max_frames=1000)


def test_dataset_and_collate_pad_with_lengths(tmp_path):
    utts = [Utterance(write_audio(tmp_path / f"{i}.wav", seconds=0.2 + 0.1 * i), 0.2 + 0.1 * i, "ab") for i in range(3)]
    extractor = FeatureExtractor(FeatureConfig(n_mels=20))
    tokenizer = train_tokenizer(TokenizerConfig(), ["ab"])
    dataset = SpeechDataset(utts, extractor, tokenizer)
    batch = collate([dataset[i] for i in range(3)])
    assert batch.features.shape == (3, 41, 20)
    assert batch.lengths.tolist() == [21, 31, 41] == dataset.num_frames()
    assert batch.features[0, 21:].abs().sum() == 0
    assert batch.targets.tolist() == tokenizer.encode("ab") * 3 and batch.target_lengths.tolist() == [2, 2, 2]


def test_the_audio_cache_reads_each_utterance_once_while_it_fits_and_never_hides_a_bad_file():
    reads = Counter()

    def read(index: int) -> torch.Tensor:
        reads[index] += 1
        if index == 9:
            raise AudioError("9.wav: unreadable")
        return torch.full((2**18,), float(index))  # 1 MB of float32

    cache = AudioCache(read, budget_mb=2.5)  # room for two
    for _ in range(3):
        assert [float(cache(i)[0]) for i in range(4)] == [0.0, 1.0, 2.0, 3.0]
        with pytest.raises(AudioError, match="9.wav"):
            cache(9)
    assert reads == {0: 1, 1: 1, 2: 3, 3: 3, 9: 3} and cache.used_bytes == 2 * 2**20


@pytest.mark.parametrize("augment", [
    AugmentConfig(noise_prob=1.0, babble_share=1.0, reverb_prob=0.5, band_prob=0.5, eq_prob=0.5, pitch_prob=0.5,
                  gain_prob=1.0, warmup_epochs=0),
    # no effect at all: the cached samples themselves go on to the features
    AugmentConfig(speed_factors=[1.0], freq_masks=0, time_masks=0),
    # one effect alone, on the samples as read: the edges (padded, trimmed to a view), a room, a channel
    AugmentConfig(speed_factors=[1.0], edge_silence_prob=1.0),
    AugmentConfig(speed_factors=[1.0], trim_prob=1.0),
    AugmentConfig(speed_factors=[1.0], reverb_prob=1.0),
    AugmentConfig(speed_factors=[1.0], band_prob=1.0, eq_prob=1.0),
], ids=["chain", "none", "edges", "trim", "room", "channel"])
def test_augmented_items_are_the_same_with_the_audio_cache(tmp_path, augment):
    """Bit for bit over two epochs, and the cached samples still equal the files: nothing downstream
    changes them in place."""
    utts = []
    for i in range(6):  # a tone between 0.1 s silences, for the trim to cut
        audio = np.concatenate([np.zeros(1600), tone(0.3 + 0.05 * i, 16000)[:, 0], np.zeros(1600)])
        sf.write(tmp_path / f"{i}.wav", audio, 16000)
        utts.append(Utterance(tmp_path / f"{i}.wav", audio.size / 16000, "ab"))
    extractor = FeatureExtractor(FeatureConfig(n_mels=20))
    tokenizer = train_tokenizer(TokenizerConfig(), ["ab"])
    plain = SpeechDataset(utts, extractor, tokenizer, augment, seed=3)
    if augment.trim_prob:  # the trim did cut (a view of the cached samples goes on)
        assert plain[ItemKey(0, 0)].features.shape[0] < extractor(plain.waveform(0)).shape[0]
    cached = SpeechDataset(utts, extractor, tokenizer, augment, seed=3, audio_cache_mb=64)
    for epoch in (0, 1):
        for i in range(len(utts)):
            assert torch.equal(cached[ItemKey(i, epoch)].features, plain[ItemKey(i, epoch)].features)
    assert sorted(cached.cache.samples) == list(range(6))
    assert all(torch.equal(cached.cache.samples[i], plain.waveform(i)) for i in range(6))


def test_a_joined_item_says_both_transcripts_with_a_pause_between(tmp_path):
    """augment.join_prob: the utterance, a pause, then one of the short ones; its targets are both
    transcripts; the same key gives the same item, and without join_prob nothing is joined."""
    texts = ["a b", "b a", "a ab"]
    utts = []
    for i, seconds in enumerate([0.8, 0.4, 2.0]):  # the third is too long to be a partner
        audio = np.concatenate([np.zeros(1600), tone(seconds, 16000, freq=300.0 + 100 * i)[:, 0], np.zeros(1600)])
        sf.write(tmp_path / f"{i}.wav", audio, 16000)
        utts.append(Utterance(tmp_path / f"{i}.wav", audio.size / 16000, texts[i]))
    extractor = FeatureExtractor(FeatureConfig(n_mels=20))
    tokenizer = train_tokenizer(TokenizerConfig(), texts)
    quiet = dict(speed_factors=[1.0], freq_masks=0, time_masks=0)
    joining = SpeechDataset(utts, extractor, tokenizer, AugmentConfig(join_prob=1.0, join_pause=[0.5, 0.5], **quiet))
    assert joining.join_partners == [0, 1]
    item = joining[ItemKey(2, 0)]
    space = tokenizer.encode("a b")[1]
    partner = [j for j in (0, 1) if item.targets.tolist() == tokenizer.encode("a ab") + [space] + tokenizer.encode(texts[j])]
    assert len(partner) == 1  # both transcripts, the partner's after a word separator
    tight = 2.0 + utts[partner[0]].duration - 0.2  # the edges' 0.1 s silences gone, 0.5 s of pause between
    assert abs(item.features.shape[0] / 100 - (tight + 0.5)) < 0.03
    again = joining[ItemKey(2, 0)]
    assert torch.equal(again.features, item.features) and torch.equal(again.targets, item.targets)
    plain = SpeechDataset(utts, extractor, tokenizer, AugmentConfig(**quiet))
    assert plain.join_partners == [] and plain[ItemKey(2, 0)].targets.tolist() == tokenizer.encode("a ab")


def test_an_unreadable_partner_leaves_the_utterance_unjoined(tmp_path):
    """The join's partner cannot be read: the utterance trains alone, and the partner's own item
    carries its error (reported where it is trained on, not on the utterance it was joined to)."""
    sf.write(tmp_path / "long.wav", tone(2.0, 16000)[:, 0], 16000)
    utts = [Utterance(tmp_path / "long.wav", 2.0, "a b"), Utterance(tmp_path / "gone.wav", 0.5, "b a")]
    tokenizer = train_tokenizer(TokenizerConfig(), ["a b", "b a"])
    augment = AugmentConfig(join_prob=1.0, speed_factors=[1.0], freq_masks=0, time_masks=0)
    dataset = SpeechDataset(utts, FeatureExtractor(FeatureConfig(n_mels=20)), tokenizer, augment)
    assert dataset.join_partners == [1]
    item = dataset[ItemKey(0, 0)]
    assert item.targets.tolist() == tokenizer.encode("a b") and item.features.shape[0] == 201
    assert "gone.wav" in dataset[ItemKey(1, 0)].reason


def test_joining_with_a_tokenizer_without_word_separator_is_refused(tmp_path):
    """Single-word transcripts train a character set without a space: joined, "ab" and "ba" would
    be taught as "abba"."""
    sf.write(tmp_path / "a.wav", tone(0.5, 16000)[:, 0], 16000)
    utts = [Utterance(tmp_path / "a.wav", 0.5, "ab"), Utterance(tmp_path / "a.wav", 0.5, "ba")]
    tokenizer = train_tokenizer(TokenizerConfig(), ["ab", "ba"])
    with pytest.raises(ConfigError, match="augment.join_prob: the tokenizer has no word separator"):
        SpeechDataset(utts, FeatureExtractor(FeatureConfig(n_mels=20)), tokenizer, AugmentConfig(join_prob=0.5))
