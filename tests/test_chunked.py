import torch

from asr.model import AcousticModel, ModelConfig


def chunk_aware_model(norm: str) -> AcousticModel:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, num_layers=3, norm=norm, projection_size=6, dropout=0.0,
                      train_chunk_frames=4, train_right_context_frames=3)
    return AcousticModel(cfg, 20, 7).train()


def test_chunk_aware_training_normalizes_real_frames_only():
    """Batch norm between layers sees real frames only, so a batch's outputs on real frames do
    not depend on how much padding it carries; outputs on padding are zero, as in whole-utterance
    training."""
    model = chunk_aware_model("batch")
    lengths = torch.tensor([61, 40, 9])
    features = torch.randn(3, 61, 20)
    for row, length in enumerate(lengths):
        features[row, length:] = 0.0
    padded = torch.cat([features, torch.zeros(3, 30, 20)], dim=1)  # 10 more output frames of padding each
    with torch.no_grad():
        tight, out_lengths = model(features, lengths)
        loose, _ = model(padded, lengths)
    for row, n in enumerate(out_lengths.tolist()):
        torch.testing.assert_close(loose[row, :n], tight[row, :n], atol=1e-5, rtol=0)
        assert loose[row, n:].abs().sum() == 0 and tight[row, n:].abs().sum() == 0
