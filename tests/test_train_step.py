"""asr.train_step.train_step: the step asr train runs and tools/bench_train.py times."""

from __future__ import annotations

import copy

import torch

from asr.data import Example, collate
from asr.model import AcousticModel, ModelConfig, ctc_loss
from asr.train_step import train_step


def make_batch(seed: int, lengths: list[int], dim: int = 20, vocab: int = 6):
    g = torch.Generator().manual_seed(seed)
    return collate([Example(torch.randn(n, dim, generator=g), torch.randint(1, vocab, (n // 12 + 1,), generator=g), i)
                    for i, n in enumerate(lengths)])


def make_model():
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=8, dropout=0.0), 20, 6).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)


def disabled_scaler():
    return torch.amp.GradScaler("cpu", enabled=False)


def test_accumulated_micro_batches_equal_the_hand_written_step():
    micro = [make_batch(1, [40, 31, 25]), make_batch(2, [52, 17])]
    model, optimizer = make_model()
    expected = copy.deepcopy(model)
    expected_optimizer = torch.optim.AdamW(expected.parameters(), lr=1e-2)
    losses = []
    for batch in micro:  # by hand: mean of the micro-batch losses, clipped to norm 0.5, one update
        loss = ctc_loss(*expected(batch.features, batch.lengths), batch.targets, batch.target_lengths) / 2
        loss.backward()
        losses.append(float(loss.detach()))
    norm = float(torch.nn.utils.clip_grad_norm_(expected.parameters(), 0.5))
    expected_optimizer.step()

    outcome = train_step(model, model, optimizer, disabled_scaler(), micro, clip_grad_norm=0.5)
    assert outcome.finite and abs(outcome.loss - sum(losses)) < 1e-5 and abs(outcome.grad_norm - norm) < 1e-4
    assert norm > 0.5  # the clip took effect, so the comparison covers it
    for got, want in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_non_finite_loss_leaves_the_parameters_alone():
    batch = make_batch(3, [30, 24])
    batch.features[1, 5, 3] = float("nan")
    model, optimizer = make_model()
    before = copy.deepcopy(model.state_dict())
    outcome = train_step(model, model, optimizer, disabled_scaler(), [batch])
    assert not outcome.finite
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not optimizer.state  # no moments recorded either

    outcome = train_step(model, model, optimizer, disabled_scaler(), [make_batch(4, [30, 24])])
    assert outcome.finite and any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_batch_whose_utterances_were_all_skipped_still_steps_with_zero_loss():
    model, optimizer = make_model()
    outcome = train_step(model, model, optimizer, disabled_scaler(), [collate([])])
    assert outcome.finite and outcome.loss == 0.0 and outcome.grad_norm == 0.0
