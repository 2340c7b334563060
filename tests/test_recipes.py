"""The recipes' run.sh as users run them: stages, done-markers, and the train stage for a few
steps on the three corpora available here; stage 0 of the others on tiny generated copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr.config import load_train_config
from conftest import FSDD, ROOT, YESNO
from test_corpus_formats import lines, make_an4_cmu, make_commonvoice, make_librispeech, make_ljspeech, make_tedlium

FEW_STEPS = ["trainer.max_steps=2", "trainer.epochs=1", "data.num_workers=0"]


def run_recipe(tmp_path: Path, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a copy of recipes/<name>/run.sh (with the shared stage scripts) under ``tmp_path``, with
    this Python's ``asr`` first on PATH, so nothing is written into the repository."""
    recipes = tmp_path / "recipes"
    if not recipes.exists():
        recipes.mkdir()
        for script in ROOT.glob("recipes/*.sh"):
            shutil.copy(script, recipes)
        for script in ROOT.glob("recipes/*/run.sh"):
            (recipes / script.parent.name).mkdir()
            shutil.copy(script, recipes / script.parent.name)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", str(recipes / name / "run.sh"), *args], capture_output=True, text=True, timeout=900,
        env={**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **(env or {})},
    )


@pytest.mark.parametrize("config", ["yesno", "fsdd", "fsdd_stream", "synth", "synth_stream", "an4", "librispeech",
                                    "commonvoice", "tedlium", "ljspeech"])
def test_every_recipe_config_composes_and_validates(config):
    cfg = load_train_config(["data.train_manifest=a.jsonl", "data.dev_manifest=b.jsonl"], config)
    if config in ("librispeech", "commonvoice"):  # DeepSpeech2-sized, as the issue asks
        assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.bidirectional) == (5, 1024, True)


def test_yesno_recipe_runs_every_stage_and_skips_finished_ones(tmp_path):
    if not YESNO.is_dir():
        pytest.skip(f"real speech data not found at {YESNO}")
    env = {"YESNO_DIR": str(YESNO)}
    done = run_recipe(tmp_path, "yesno", *FEW_STEPS, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    exp = tmp_path / "recipes" / "yesno" / "exp"
    assert (exp / "model.pt").is_file() and {p.name for p in exp.glob(".done.*")} == {".done.data", ".done.train", ".done.score",
                                                                                ".done.score_lexicon"}
    for name in ("test", "test.lm"):
        summary = (exp / f"{name}.wer").read_text().splitlines()
        assert summary[-1].startswith("WER ") and len(lines(exp / f"{name}.errors.jsonl")) == 30
    assert "test greedy: WER" in done.stdout and "test, beam held to yes/no: WER" in done.stdout
    assert (exp / "lm.arpa").is_file()
    again = run_recipe(tmp_path, "yesno", "--stage", "1", "--stop-stage", "1", env=env)
    assert again.returncode == 0 and "stage 1 (train): done already, skipped" in again.stdout


def test_a_failed_stage_leaves_no_marker_and_is_redone(tmp_path):
    failed = run_recipe(tmp_path, "yesno", "--stop-stage", "0", env={"YESNO_DIR": str(tmp_path / "missing")})
    assert failed.returncode != 0 and "missing: not found; expected the yesno layout" in failed.stderr
    assert not (tmp_path / "recipes" / "yesno" / "exp" / ".done.data").exists()
    if YESNO.is_dir():
        redone = run_recipe(tmp_path, "yesno", "--stop-stage", "0", env={"YESNO_DIR": str(YESNO)})
        assert redone.returncode == 0 and (tmp_path / "recipes" / "yesno" / "exp" / ".done.data").exists()


def test_fsdd_speaker_recipe_trains_a_few_steps(tmp_path):
    if not (FSDD / "recordings").is_dir():
        pytest.skip(f"real speech data not found at {FSDD}")
    env = {"FSDD_DIR": str(FSDD), "FSDD_SPLIT": "speaker", "FSDD_SIZE": "10"}
    done = run_recipe(tmp_path, "fsdd", "--stop-stage", "1", *FEW_STEPS, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    recipe = tmp_path / "recipes" / "fsdd"
    assert (recipe / "exp-speaker" / "model.pt").is_file() and not (recipe / "exp").exists()
    test_speakers = {Path(r["audio_filepath"]).stem.split("_")[1] for r in lines(recipe / "data-speaker" / "isolated_test.jsonl")}
    assert test_speakers == {"theo"} and len(lines(recipe / "data-speaker" / "connected_train.jsonl")) == 10


def test_synth_recipe_trains_a_few_steps(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    done = run_recipe(tmp_path, "synth", "--stop-stage", "1", *FEW_STEPS, env={"SYNTH_SIZE": "20"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "recipes" / "synth" / "exp" / "model.pt").is_file()


def test_fsdd_fine_tune_recipe_scores_theo_with_and_without_speaker_labels(tmp_path):
    if not (FSDD / "recordings").is_dir() or shutil.which("espeak-ng") is None:
        pytest.skip(f"needs espeak-ng and the real speech data at {FSDD}")
    assert run_recipe(tmp_path, "synth", "--stop-stage", "1", *FEW_STEPS, env={"SYNTH_SIZE": "20"}).returncode == 0
    init = tmp_path / "recipes" / "synth" / "exp" / "model.pt"
    env = {"FSDD_DIR": str(FSDD), "FSDD_SPLIT": "speaker", "FSDD_SIZE": "10", "FSDD_INIT": str(init)}
    done = run_recipe(tmp_path, "fsdd", *FEW_STEPS, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    exp = tmp_path / "recipes" / "fsdd" / "exp-speaker-ft"
    for set_name in ("isolated_test", "connected_test"):
        for variant in ("", ".lm", ".spk", ".spk.lm", ".near", ".near.lm", ".spk.adapt.lm", ".near.adapt.lm"):
            summary = (exp / f"{set_name}{variant}.wer").read_text().splitlines()
            assert summary[-1].startswith("WER ") and (exp / f"{set_name}{variant}.errors.jsonl").is_file()
            if set_name == "isolated_test":
                assert summary[0] == "isolated_test.jsonl: 500 utterances, 500 words"  # every clip of theo
    assert "isolated_test nearest-voice normalization (no labels), beam + LM: WER" in done.stdout
    assert "isolated_test per-speaker normalization and adaptation, beam + LM: WER" in done.stdout


@pytest.mark.parametrize("name, make, env, manifests", [
    ("an4", lambda d: make_an4_cmu(d), "AN4_DIR", {"train": 2, "dev": 0, "test": 1}),
    ("librispeech", lambda d: make_librispeech(d, {s: [("84", "100", ["HELLO"])] for s in ("train-clean-5", "dev-clean-2")}),
     "LIBRISPEECH_DIR", {"train-clean-5": 1, "dev-clean-2": 1}),
    ("commonvoice", lambda d: make_commonvoice(d / "en", {"train": [("a.mp3", "Hi")], "dev": [("b.mp3", "Yo")],
                                                          "test": [("c.mp3", "No")]}) and d / "en", "CV_DIR",
     {"train": 1, "dev": 1, "test": 1}),
    ("tedlium", lambda d: make_tedlium(d), "TEDLIUM_DIR", {"train": 2, "dev": 2, "test": 2}),
    ("ljspeech", lambda d: make_ljspeech(d), "LJSPEECH_DIR", {"train": 2, "dev": 1, "test": 1}),
])
def test_stage_0_of_the_local_copy_recipes(tmp_path, name, make, env, manifests):
    data = make(tmp_path / "corpus")
    extra = {"TRAIN_SET": "train-clean-5", "DEV_SET": "dev-clean-2", "TEST_SETS": "dev-clean-2"} if name == "librispeech" else {}
    done = run_recipe(tmp_path, name, "--stop-stage", "0", env={env: str(data), **extra})
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "recipes" / name / "data"
    assert {m: len(lines(out / f"{m}.jsonl")) for m in manifests} == manifests
