import torch

from asr.features import AugmentConfig, FeatureConfig, FeatureExtractor, NormMode, feature_stats, spec_augment, speed_perturb


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


def test_spec_augment_masks_bands_and_spans_and_is_reproducible():
    feats = torch.ones(200, 80)
    cfg = AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_max_ratio=0.1)
    a = spec_augment(feats, cfg, torch.Generator().manual_seed(3))
    b = spec_augment(feats, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(feats, torch.ones(200, 80))  # input untouched
    zero_cols = (a == 0).all(0).sum()
    zero_rows = (a == 0).all(1).sum()
    assert 0 < zero_cols <= 20 or 0 < zero_rows <= 40
    assert (a == 0).float().mean() < 0.4


def test_speed_perturbation_changes_length_by_the_factor():
    waveform = noise(1.0)
    assert speed_perturb(waveform, 1.0, 16000) is waveform
    assert abs(speed_perturb(waveform, 1.1, 16000).shape[0] - 16000 / 1.1) <= 1
    assert abs(speed_perturb(waveform, 0.9, 16000).shape[0] - 16000 / 0.9) <= 1
