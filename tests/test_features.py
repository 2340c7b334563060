import torch

from asr.features import FeatureConfig, FeatureExtractor, NormMode, feature_stats
from asr.alignment import speech_runs  # [start, end) runs of True


def noise(seconds: float, rate: int = 16000, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(int(seconds * rate), generator=torch.Generator().manual_seed(seed))


def test_log_mel_shape_follows_window_and_hop():
    cfg = FeatureConfig(sample_rate=16000, n_mels=80, win_ms=25, hop_ms=10)
    extractor = FeatureExtractor(cfg)
    feats = extractor(noise(1.0))
    assert feats.shape == (101, 80) == (cfg.num_frames(16000), cfg.n_mels)
    assert cfg.win_length == 400 and cfg.hop_length == 160


def test_global_statistics_normalize_the_training_set_to_zero_mean_unit_variance():
    extractor = FeatureExtractor(FeatureConfig(n_mels=40))
    raw = [extractor.log_mel(noise(0.5 + 0.1 * i, seed=i) * (i + 1)) for i in range(5)]
    extractor.set_stats(*feature_stats(raw))
    normalized = torch.cat([extractor.normalize(r) for r in raw])
    assert torch.allclose(normalized.mean(0), torch.zeros(40), atol=1e-4)
    assert torch.allclose(normalized.std(0, unbiased=False), torch.ones(40), atol=1e-3)


def test_per_utterance_normalization():
    extractor = FeatureExtractor(FeatureConfig(n_mels=40, normalization=NormMode.utterance))
    feats = extractor(noise(1.0) * 3)
    assert torch.allclose(feats.mean(0), torch.zeros(40), atol=1e-4)
    assert torch.allclose(feats.std(0, unbiased=False), torch.ones(40), atol=1e-3)


# ---- SpecAugment masks: each kind alone must mask, whole bands or whole frames, and nothing else ----


def test_frequency_masking_alone_zeroes_whole_bands_of_at_most_the_width():
    from asr.augment import AugmentConfig, spec_augment

    feats = torch.randn(300, 40, generator=torch.Generator().manual_seed(0)) + 10  # no zero anywhere
    cfg = AugmentConfig(freq_masks=1, freq_mask_width=10, time_masks=0)
    widths, starts = [], set()
    for seed in range(60):
        out = spec_augment(feats, cfg, torch.Generator().manual_seed(seed))
        zero = out == 0
        columns = zero.all(0)
        assert torch.equal(zero, columns.expand_as(zero))  # every zero lies in a whole masked band
        assert not zero.all(1).any()  # no frame is masked
        assert torch.equal(out[:, ~columns], feats[:, ~columns])  # the rest is untouched
        spans = speech_runs(columns.tolist())
        assert len(spans) <= 1  # one mask: one contiguous band
        width = sum(end - start for start, end in spans)
        assert width <= 10
        widths.append(width)
        starts.update(start for start, _ in spans)
    # a width is drawn from 0..10 and a start anywhere: nearly every draw masks something, somewhere
    assert sum(w > 0 for w in widths) >= 45 and len(starts) >= 10, (widths, starts)
    two = AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=0)
    counts = [int((spec_augment(feats, two, torch.Generator().manual_seed(s)) == 0).all(0).sum()) for s in range(60)]
    assert max(counts) <= 20 and sum(counts) > sum(widths)  # two bands mask more than one


def test_time_masking_alone_zeroes_whole_frames_of_at_most_the_ratio():
    from asr.augment import AugmentConfig, spec_augment

    feats = torch.randn(300, 40, generator=torch.Generator().manual_seed(1)) + 10
    cfg = AugmentConfig(freq_masks=0, time_masks=1, time_mask_max_ratio=0.1)  # at most 30 of 300 frames
    widths, starts = [], set()
    for seed in range(60):
        out = spec_augment(feats, cfg, torch.Generator().manual_seed(seed))
        zero = out == 0
        rows = zero.all(1)
        assert torch.equal(zero, rows.unsqueeze(1).expand_as(zero))  # every zero lies in a whole masked frame
        assert not zero.all(0).any()  # no band is masked
        assert torch.equal(out[~rows], feats[~rows])
        spans = speech_runs(rows.tolist())
        assert len(spans) <= 1
        width = sum(end - start for start, end in spans)
        assert width <= 30
        widths.append(width)
        starts.update(start for start, _ in spans)
    assert sum(w > 0 for w in widths) >= 45 and len(starts) >= 20, (widths, starts)
    # the widest mask follows the utterance's length: 0.1 of 50 frames is 5
    short = feats[:50]
    masked = [int((spec_augment(short, cfg, torch.Generator().manual_seed(s)) == 0).all(1).sum()) for s in range(60)]
    assert max(masked) <= 5 and sum(m > 0 for m in masked) >= 30, masked


def test_no_masks_leave_the_features_as_they_are():
    from asr.augment import AugmentConfig, spec_augment

    feats = torch.randn(100, 40) + 10
    out = spec_augment(feats, AugmentConfig(freq_masks=0, time_masks=0), torch.Generator().manual_seed(0))
    assert torch.equal(out, feats) and out is not feats  # a new tensor; the input is never written


def test_training_examples_get_the_masks_on_the_normalized_features(tmp_path):
    """Through the training data path: with only masks configured (no speed change, no waveform
    effect), an augmented example is the plain example with bands and frames zeroed."""
    import soundfile as sf

    from asr.augment import AugmentConfig
    from asr.data import SpeechDataset, Utterance

    rate = 16000
    sf.write(tmp_path / "n.wav", noise(2.0, rate).numpy(), rate, subtype="FLOAT")
    extractor = FeatureExtractor(FeatureConfig(n_mels=40, normalization=NormMode.utterance))
    utts = [Utterance(tmp_path / "n.wav", 2.0, "")]
    plain = SpeechDataset(utts, extractor)[0].features
    masks = AugmentConfig(speed_factors=[1.0], freq_masks=1, freq_mask_width=12, time_masks=1, time_mask_max_ratio=0.1)
    bands = frames = 0
    for seed in range(20):
        augmented = SpeechDataset(utts, extractor, augment=masks, seed=seed)[(0, 0)].features
        assert augmented.shape == plain.shape
        zero = augmented == 0
        columns, rows = zero.all(0), zero.all(1)
        assert torch.equal(zero, columns.expand_as(zero) | rows.unsqueeze(1).expand_as(zero))
        assert torch.allclose(augmented[~rows][:, ~columns], plain[~rows][:, ~columns], atol=1e-5)
        assert int(columns.sum()) <= 12 and int(rows.sum()) <= plain.shape[0] // 10
        bands, frames = bands + int(columns.any()), frames + int(rows.any())
    assert bands >= 12 and frames >= 12  # both kinds of mask reach the training examples
