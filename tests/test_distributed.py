"""Data-parallel training for real: two processes under torchrun on gloo (CPU) against one
process accumulating the same two batches per step, and a resume with a different world size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr.checkpoint import load_checkpoint
from test_resume import manifest  # noqa: F401  (the 8 yes/no files, as a fixture)
from conftest import tiny_overrides

EPOCHS = 2


def overrides(manifest_path: Path, out: Path, resume: bool = False, **changes: str) -> list[str]:
    items = dict(o.split("=", 1) for o in tiny_overrides(manifest_path, out, EPOCHS, resume))
    items.update({"trainer.num_threads": "1", "trainer.keep_checkpoints": "5"}, **changes)
    return [f"{k}={v}" for k, v in items.items()]


def train(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    if processes == 1:
        command = [sys.executable, "-m", "asr", "train", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "asr", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def losses(out: Path) -> list[float]:
    return [float(line.split("\t")[1]) for line in (out / "steps.tsv").read_text().splitlines()[1:]]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(sorted((out / "checkpoints").glob("step-*.pt"))[-1])["model"]["state_dict"]


@pytest.fixture(scope="module")
def one_process_accumulating(manifest, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("accumulate")
    done = train(overrides(manifest, out, **{"trainer.grad_accum_steps": "2"}))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_two_processes_on_gloo_equal_one_process_accumulating_two_batches(manifest, one_process_accumulating, tmp_path):  # noqa: F811
    out = tmp_path / "ddp"
    done = train(overrides(manifest, out), processes=2)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = losses(one_process_accumulating)
    assert len(losses(out)) == len(reference) >= 4
    assert losses(out) == pytest.approx(reference, rel=1e-5)
    for name, tensor in weights(one_process_accumulating).items():
        torch.testing.assert_close(weights(out)[name], tensor, rtol=1e-4, atol=1e-5)
    # rank 0 alone wrote the run's files, and printed the model's path
    assert (out / "model.pt").is_file() and (out / "train.log").read_text().count("(2 processes)") == 1
    assert done.stdout.split() == [str(out / "model.pt")]


def test_resume_with_a_different_world_size(manifest, one_process_accumulating, tmp_path):  # noqa: F811
    out = tmp_path / "resized"
    first = train(overrides(manifest, out, **{"trainer.max_steps": "3"}), processes=2)
    assert first.returncode == 0, first.stderr[-2000:]
    assert load_checkpoint(sorted((out / "checkpoints").glob("step-*.pt"))[-1])["training"]["state"]["step"] == 3
    second = train(overrides(manifest, out, resume=True, **{"trainer.grad_accum_steps": "2"}))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming 1 process(es) x 2 accumulation from a run of 2 x 1" in second.stderr
    assert losses(out) == pytest.approx(losses(one_process_accumulating), rel=1e-5)
    for name, tensor in weights(one_process_accumulating).items():
        torch.testing.assert_close(weights(out)[name], tensor, rtol=1e-4, atol=1e-5)


def test_resuming_with_a_smaller_global_batch_says_how_to_keep_it(manifest, tmp_path):  # noqa: F811
    out = tmp_path / "smaller"
    first = train(overrides(manifest, out, **{"trainer.max_steps": "2", "trainer.grad_accum_steps": "2"}))
    assert first.returncode == 0, first.stderr[-2000:]
    second = train(overrides(manifest, out, resume=True, **{"trainer.max_steps": "3"}))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "the global batch changes from 2 to 1 batches per step" in second.stderr
    assert "(trainer.grad_accum_steps=2 keeps it)" in second.stderr


def test_more_batches_per_step_than_an_epoch_has_is_a_one_line_error(manifest, tmp_path):  # noqa: F811
    done = train(overrides(manifest, tmp_path / "too-many", **{"trainer.grad_accum_steps": "50"}))
    errors = [line for line in done.stderr.splitlines() if line.startswith("asr: error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert "fewer than one optimizer step takes: 1 process(es) x trainer.grad_accum_steps=50" in errors[0]


def _rank_with_its_own_view(rank: int, init_file: str, results: str) -> None:
    """Two gloo ranks that see different numbers of training utterances."""
    from datetime import timedelta

    from asr.distributed import Distributed, check_same_on_all_ranks
    from asr.errors import TrainingError

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                                         timeout=timedelta(seconds=60))
    try:
        check_same_on_all_ranks((8, 1.5) if rank == 0 else (7, 1.25), "the training utterances", Distributed(rank, 2))
        message = "no error"
    except TrainingError as exc:
        message = str(exc)
    Path(results, f"{rank}.txt").write_text(message)
    check_same_on_all_ranks((3, 0.5), "the same thing", Distributed(rank, 2))  # agreeing ranks pass
    torch.distributed.destroy_process_group()


def test_ranks_that_see_different_data_stop_with_the_same_clear_error(tmp_path):
    torch.multiprocessing.spawn(_rank_with_its_own_view, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    messages = {(tmp_path / f"{rank}.txt").read_text() for rank in range(2)}
    assert messages == {"the processes disagree on the training utterances (rank 0: (8, 1.5), rank 1: (7, 1.25)): "
                        "do all nodes see the same files?"}
