"""asr.train_step.train_step: the step asr train runs and tools/bench_train.py times."""

from __future__ import annotations

import copy
import datetime

import pytest
import torch

from asr.data import Example, collate
from asr.model import AcousticModel, ModelConfig, NormKind, Subsampling, ctc_loss
from asr.train_step import train_step


def make_batch(seed: int, lengths: list[int], dim: int = 20, vocab: int = 6):
    g = torch.Generator().manual_seed(seed)
    return collate([Example(torch.randn(n, dim, generator=g), torch.randint(1, vocab, (n // 12 + 1,), generator=g), i)
                    for i, n in enumerate(lengths)])


def make_model(**changes):
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=8, dropout=0.0, **changes), 20, 6).train()
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
    model, optimizer = make_model(norm=NormKind.batch, subsampling=Subsampling.conv, subsampling_factor=2)
    statistics = copy.deepcopy({k: v for k, v in model.state_dict().items() if "running" in k})
    outcome = train_step(model, model, optimizer, disabled_scaler(), [collate([])])
    assert outcome.finite and outcome.loss == 0.0 and outcome.grad_norm == 0.0
    assert statistics and all(torch.equal(model.state_dict()[k], v) for k, v in statistics.items())
    assert all(m.training for m in model.modules())  # batch norm trains again after the zero-loss pass


def _rank_with_or_without_data(rank: int, init_file: str, results: str) -> None:
    """One of two gloo ranks: rank 0 trains on a real batch, rank 1's utterances were all skipped."""
    from torch.nn.parallel import DistributedDataParallel

    from asr.distributed import Distributed

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                                         timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    model, optimizer = make_model()  # same seed: same initial weights on both ranks
    batch = make_batch(1, [40, 31]) if rank == 0 else collate([])
    outcome = train_step(model, DistributedDataParallel(model), optimizer, disabled_scaler(), [batch],
                         dist=Distributed(rank, 2))
    torch.save({"loss": outcome.loss, "state": model.state_dict()}, f"{results}/{rank}.pt")
    torch.distributed.destroy_process_group()


def test_a_rank_whose_batch_was_all_skipped_still_joins_the_gradient_exchange(tmp_path):
    torch.multiprocessing.spawn(_rank_with_or_without_data, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    # one process on rank 0's batch alone, its gradient halved (the mean over two ranks, one of them zero)
    model, optimizer = make_model()
    batch = make_batch(1, [40, 31])
    loss = ctc_loss(*model(batch.features, batch.lengths), batch.targets, batch.target_lengths) / 2
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    assert ranks[0]["loss"] == ranks[1]["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], ranks[1]["state"][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-5, atol=1e-6)
