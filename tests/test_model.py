
import pytest
import torch

from asr.model import AcousticModel, CellType, ModelConfig, NormKind, Subsampling, ctc_loss


def batch(lengths, dim=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.zeros(len(lengths), max(lengths), dim)
    for i, n in enumerate(lengths):
        feats[i, :n] = torch.randn(n, dim, generator=g)
    return feats, torch.tensor(lengths)


CONFIGS = [
    ModelConfig(cell=CellType.lstm, num_layers=2, hidden_size=16),
    ModelConfig(cell=CellType.gru, num_layers=3, hidden_size=8, bidirectional=False, norm=NormKind.layer),
    ModelConfig(cell=CellType.rnn, num_layers=2, hidden_size=8, projection_size=6, norm=NormKind.batch),
    ModelConfig(num_layers=2, hidden_size=8, subsampling=Subsampling.conv, subsampling_factor=2, conv_channels=4),
    ModelConfig(num_layers=1, hidden_size=8, subsampling=Subsampling.stack, subsampling_factor=1),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.cell.value}-{c.norm.value}-{c.subsampling.value}{c.subsampling_factor}")
def test_batched_and_per_item_outputs_agree(cfg):
    torch.manual_seed(0)
    model = AcousticModel(cfg, input_dim=20, vocab_size=7).eval()
    feats, lengths = batch([37, 50, 11, 24])
    with torch.no_grad():
        log_probs, out_lengths = model(feats, lengths)
        for i, n in enumerate(lengths.tolist()):
            single, single_len = model(feats[i : i + 1, :n], lengths[i : i + 1])
            assert single_len.item() == out_lengths[i].item()
            torch.testing.assert_close(log_probs[i, : single_len.item()], single[0], atol=1e-5, rtol=1e-5)
    valid = out_lengths[0].item()
    assert torch.allclose(log_probs[0, :valid].exp().sum(-1), torch.ones(valid), atol=1e-5)


@pytest.mark.parametrize("kind,factor", [(Subsampling.stack, 1), (Subsampling.stack, 3), (Subsampling.stack, 4),
                                         (Subsampling.conv, 1), (Subsampling.conv, 2), (Subsampling.conv, 3)])
def test_output_lengths_match_the_subsampling_arithmetic(kind, factor):
    cfg = ModelConfig(num_layers=1, hidden_size=4, subsampling=kind, subsampling_factor=factor, conv_channels=2)
    model = AcousticModel(cfg, input_dim=10, vocab_size=5).eval()
    for n in [1, 2, 3, 7, 8, 9, 100, 101]:
        feats, lengths = batch([n], dim=10)
        log_probs, out_lengths = model(feats, lengths)
        expected = -(-n // factor)  # ceil(n / factor)
        assert out_lengths.item() == expected == log_probs.shape[1]
        assert model.output_lengths(torch.tensor([n])).item() == expected


def test_padding_costs_no_recurrent_compute_and_is_ignored():
    """Extra zero padding beyond the longest item changes nothing."""
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=8), 20, 5).eval()
    feats, lengths = batch([30, 20])
    padded = torch.cat([feats, torch.randn(2, 15, 20)], dim=1)  # garbage past every length
    with torch.no_grad():
        a, _ = model(feats, lengths)
        b, _ = model(padded, lengths)
    torch.testing.assert_close(a[0], b[0, : a.shape[1]])
    torch.testing.assert_close(a[1, :7], b[1, :7])


def test_batched_and_per_item_gradients_agree():
    """The backward pass through the within-length reversal: a padded batch's summed per-item
    losses give the same weight gradients as the items one at a time."""
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=8, dropout=0.0), 20, 6).train()
    feats, lengths = batch([31, 12, 25])
    targets = [torch.tensor([1, 2, 3]), torch.tensor([4]), torch.tensor([5, 1])]

    def loss_of(f: torch.Tensor, n: torch.Tensor, t: list[torch.Tensor]) -> torch.Tensor:
        log_probs, out_lengths = model(f, n)
        return ctc_loss(log_probs, out_lengths, torch.cat(t), torch.tensor([len(x) for x in t])) * len(t)

    model.zero_grad()
    loss_of(feats, lengths, targets).backward()
    batched = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i, n in enumerate(lengths.tolist()):
        loss_of(feats[i : i + 1, :n], lengths[i : i + 1], targets[i : i + 1]).backward()
    for together, alone in zip(batched, (p.grad for p in model.parameters())):
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_ctc_loss_is_finite_and_trains():
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(num_layers=1, hidden_size=16, dropout=0.0), 20, 5)
    feats, lengths = batch([40, 30])
    targets, target_lengths = torch.tensor([1, 2, 3, 2, 4]), torch.tensor([3, 2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        log_probs, out_lengths = model(feats, lengths)
        loss = ctc_loss(log_probs, out_lengths, targets, target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.5 * losses[0]


def test_impossible_alignment_gives_zero_not_infinity():
    log_probs = torch.full((1, 2, 3), -1.0986)  # 2 frames cannot emit 5 tokens
    loss = ctc_loss(log_probs, torch.tensor([2]), torch.tensor([1, 2, 1, 2, 1]), torch.tensor([5]))
    assert loss.item() == 0.0
