import torch

from asr.features import FeatureConfig, FeatureExtractor, NormMode, feature_stats


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
