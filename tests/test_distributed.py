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


def overrides(manifest: Path, out: Path, resume: bool = False, **changes: str) -> list[str]:
    items = dict(o.split("=", 1) for o in tiny_overrides(manifest, out, EPOCHS, resume))
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
    # rank 0 alone wrote the run's files
    assert (out / "model.pt").is_file() and (out / "train.log").read_text().count("(2 processes)") == 1


def test_resume_with_a_different_world_size(manifest, one_process_accumulating, tmp_path):  # noqa: F811
    out = tmp_path / "resized"
    first = train(overrides(manifest, out, **{"trainer.max_steps": "3"}), processes=2)
    assert first.returncode == 0, first.stderr[-2000:]
    assert load_checkpoint(sorted((out / "checkpoints").glob("step-*.pt"))[-1])["training"]["step"] == 3
    second = train(overrides(manifest, out, resume=True, **{"trainer.grad_accum_steps": "2"}))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming 1 process(es) x 2 accumulation from a run of 2 x 1" in second.stderr
    assert losses(out) == pytest.approx(losses(one_process_accumulating), rel=1e-5)
    for name, tensor in weights(one_process_accumulating).items():
        torch.testing.assert_close(weights(out)[name], tensor, rtol=1e-4, atol=1e-5)
