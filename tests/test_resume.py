"""Training survives kill -9, Ctrl-C, a corrupt checkpoint and exploding weights: each test runs
``asr train`` in a real subprocess, interrupts it for real, resumes, and compares the loss
sequence (steps.tsv) and the final weights with an uninterrupted run bit for bit."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asr.audio import audio_info
from asr.checkpoint import load_checkpoint
from asr.data import Utterance, write_manifest
from conftest import YESNO, tiny_overrides

EPOCHS = 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    if not YESNO.is_dir():
        pytest.skip(f"real speech data not found at {YESNO}")
    files = sorted(YESNO.glob("*.wav"))[:8]
    utts = [Utterance(f, audio_info(f)[1], " ".join("yes" if c == "1" else "no" for c in f.stem.split("_"))) for f in files]
    return write_manifest(tmp_path_factory.mktemp("resume") / "train.jsonl", utts)


def overrides(manifest: Path, out: Path, resume: bool = False, **changes: str) -> list[str]:
    """The tiny config with dropout and the robust augmentation on (noise, babble of other
    utterances, rooms, channels, half the utterances joined with another, ramped in over the
    epochs: the RNG state and the epoch matter) and a checkpoint after every step."""
    items = dict(o.split("=", 1) for o in tiny_overrides(manifest, out, EPOCHS, resume))
    items.update({"model.dropout": "0.2", "augment": "robust", "augment.warmup_epochs": "2",
                  "augment.join_prob": "0.5", "augment.join_partner_seconds": "10",
                  "trainer.checkpoint_every_steps": "1",
                  "trainer.keep_checkpoints": "3", "trainer.num_threads": "1"}, **changes)
    return [f"{k}={v}" for k, v in items.items()]


def start(args: list[str], slow_write: str | None = None) -> subprocess.Popen:
    """``asr train ARGS`` in a subprocess; ``slow_write``: the name of a file whose write is held
    open (tests/slow_write.py)."""
    launcher = ["-m", "asr"] if slow_write is None else [str(Path(__file__).with_name("slow_write.py")), slow_write]
    return subprocess.Popen([sys.executable, *launcher, "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def steps_done(out: Path) -> int:
    path = out / "steps.tsv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"training ended before the interruption point: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "interruption point not reached"
        time.sleep(0.002)


def final_state(out: Path) -> tuple[dict, str]:
    last = sorted((out / "checkpoints").glob("step-*.pt"))[-1]
    return load_checkpoint(last)["model"]["state_dict"], (out / "steps.tsv").read_text()


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("uninterrupted")
    code, err = finish(start(overrides(manifest, out)))
    assert code == 0, err[-2000:]
    weights, steps = final_state(out)
    assert len(steps.splitlines()) - 1 >= EPOCHS * 4  # 8 files, at most 2 per batch
    return weights, steps, out


def assert_identical(out: Path, reference) -> None:
    weights, steps = final_state(out)
    assert steps == reference[1]  # every step's loss and learning rate, to the last bit of repr()
    for name, tensor in reference[0].items():
        assert torch.equal(tensor, weights[name]), name
    model_a, model_b = load_checkpoint(out / "model.pt"), load_checkpoint(reference[2] / "model.pt")
    for name, tensor in model_b["model"]["state_dict"].items():
        assert torch.equal(tensor, model_a["model"]["state_dict"][name]), name


def test_kill_9_at_random_points_and_mid_checkpoint_write_then_resume_bit_for_bit(manifest, reference, tmp_path):
    out = tmp_path / "killed"
    total = len(reference[1].splitlines()) - 1
    rng = random.Random(20261129)
    points = sorted(rng.sample(range(1, total - 1), 3))
    write_kill = points[1]  # this one lands inside a checkpoint write (after fsync, before rename)
    resume, after_write_kill = False, False
    for point in points:
        slow = f"step-{point + 1:09d}.pt" if point == write_kill else None
        process = start(overrides(manifest, out, resume=resume), slow)
        if point == write_kill:
            wait_for(lambda: any((out / "checkpoints").glob(f".step-{point + 1:09d}.pt.*.tmp")), process)
        else:
            wait_for(lambda: steps_done(out) >= point, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        if after_write_kill:  # the run after the kill inside a write found and removed its temporary file
            assert "interrupted checkpoint write" in process.stderr.read()
        after_write_kill = point == write_kill
        if after_write_kill:
            assert not (out / "checkpoints" / f"step-{point + 1:09d}.pt").exists()  # the rename never happened
        resume = True
    code, err = finish(start(overrides(manifest, out, resume=True)))
    assert code == 0, err[-2000:]
    if after_write_kill:
        assert "interrupted checkpoint write" in err
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert_identical(out, reference)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(manifest, reference, tmp_path):
    out = tmp_path / "corrupt"
    process = start(overrides(manifest, out))
    wait_for(lambda: steps_done(out) >= 7, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    newest = sorted((out / "checkpoints").glob("step-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a copy cut short
    code, err = finish(start(overrides(manifest, out, resume=True)))
    assert code == 0, err[-2000:]
    assert f"{newest}: corrupt or truncated checkpoint" in err and "falling back to the previous checkpoint" in err
    assert_identical(out, reference)


def test_ctrl_c_saves_a_checkpoint_and_exits_then_resumes(manifest, reference, tmp_path):
    out = tmp_path / "ctrl-c"
    workers = {"data.num_workers": "1", "trainer.checkpoint_every_steps": "0"}  # a loader worker gets the signal too
    process = start(overrides(manifest, out, **workers))
    wait_for(lambda: (out / "train.log").exists() and "epoch 1:" in (out / "train.log").read_text(), process)
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130 and "trainer.resume=true" in err, err[-2000:]
    stopped_at = load_checkpoint(sorted((out / "checkpoints").glob("step-*.pt"))[-1])["training"]["state"]
    assert stopped_at["step"] >= 4
    code, err = finish(start(overrides(manifest, out, resume=True, **workers)))
    assert code == 0, err[-2000:]
    assert_identical(out, reference)


def test_exploding_training_stops_with_a_clear_error_and_a_checkpoint(manifest, tmp_path):
    out = tmp_path / "nan"
    code, err = finish(start(overrides(manifest, out, **{"optim.lr": "1e30", "optim.warmup_steps": "0",
                                                         "trainer.max_nonfinite_steps": "3"})))
    lines = [line for line in err.splitlines() if line.startswith("asr: error:")]
    assert code == 2 and len(lines) == 1 and "3 non-finite steps in a row" in lines[0], err[-2000:]
    assert "Traceback" not in err and "step skipped" in err
    saved = Path(lines[0].rsplit("checkpoint saved to ", 1)[1])
    assert load_checkpoint(saved)["training"]["state"]["skipped_steps"] >= 3
