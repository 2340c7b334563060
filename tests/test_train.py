"""Training end to end on real speech: a tiny model overfits a handful of utterances."""

from __future__ import annotations

import json

import pytest
import torch

from asr.checkpoint import load_checkpoint
from asr.config import DataConfig, load_train_config
from asr.train import train
from asr.train_build import audio_cache_mb, loader_workers, lr_factor
from asr.errors import ConfigError
from conftest import tiny_config, tiny_overrides
from asr.transcribe import Recognizer


def test_only_a_training_process_loading_its_own_batches_keeps_an_audio_cache():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    data = lambda **kw: DataConfig(train_manifest="t.jsonl", dev_manifest="d.jsonl", **kw)  # noqa: E731
    assert audio_cache_mb(data(num_workers=0), cpu) == 1024.0
    assert audio_cache_mb(data(num_workers=0, audio_cache_mb=64.0), cuda) == 64.0
    assert audio_cache_mb(data(num_workers=2), cpu) == 0.0  # workers start afresh each epoch
    assert audio_cache_mb(data(num_workers=-1), cuda) == 0.0  # auto: one worker beside a GPU


def test_loader_workers_auto_uses_none_on_a_small_cpu_and_one_beside_a_gpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [loader_workers(-1, cpu, cores) for cores in (1, 2, 4, 8)] == [0, 0, 0, 1]
    assert loader_workers(-1, cuda, cores=2) == 1
    assert loader_workers(3, cpu, cores=2) == 3 and loader_workers(0, cuda, cores=64) == 0  # asked for: as asked


def test_learning_rate_warms_up_then_decays():
    from asr.config import DecayKind

    factors = [lr_factor(s, 100, 10, DecayKind.cosine, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)


def test_tiny_model_overfits_real_utterances(trained_tiny):
    model_path, manifest, rates = trained_tiny
    assert rates.cer <= 5.0, [(u.reference, u.hypothesis) for u in rates.utterances]
    out = model_path.parent
    assert (out / "config.yaml").is_file() and (out / "train.log").is_file()
    assert len(list((out / "checkpoints").glob("step-*.pt"))) == 2  # trainer.keep_checkpoints
    steps = (out / "steps.tsv").read_text().splitlines()
    assert steps[0] == "step\tloss\tlr" and [int(line.split()[0]) for line in steps[1:]] == list(range(1, len(steps)))
    # the loop optimized the loss it logged: its last steps are 50 times below its first (CTC of a
    # fresh model is ~10 per frame here; an overfit one well under 0.2); a loop whose updates do
    # nothing, or go the wrong way, stays near the start
    losses = [float(line.split("\t")[1]) for line in steps[1:]]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first / 50, (first, last)
    epochs = [line for line in (out / "train.log").read_text().splitlines() if "INFO asr.train: epoch " in line]
    assert len(epochs) == 40 and all(" data wait " in line and "%, dev WER" in line for line in epochs)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(out / "tensorboard")).Reload()
    waits = scalars.Scalars("train/data_wait_ms")  # every trainer.log_every (20) steps
    assert [w.step for w in waits] == list(range(20, len(steps), 20)) and all(w.value >= 0 for w in waits)
    assert len(scalars.Scalars("train/data_wait")) == 40  # the share, once per epoch


def test_checkpoint_holds_everything_to_resume_and_to_transcribe(trained_tiny):
    model_path, _, _ = trained_tiny
    final = load_checkpoint(model_path)
    assert set(final) == {"format_version", "model", "features", "tokenizer"}
    last = load_checkpoint(sorted((model_path.parent / "checkpoints").glob("step-*.pt"))[-1])
    assert {"optimizer", "scheduler", "scaler", "torch_rng", "state"} <= set(last["training"])
    assert {"step", "epoch", "batch_in_epoch"} <= set(last["training"]["state"])
    assert last["training"]["state"]["epoch"] == 40 and last["training"]["state"]["batch_in_epoch"] == 0


def test_checkpoint_round_trip_transcribes_identically(trained_tiny, tmp_path):
    model_path, manifest, rates = trained_tiny
    from asr.checkpoint import build_components, inference_state, save_checkpoint

    model, extractor, tokenizer = build_components(load_checkpoint(model_path))
    copy = save_checkpoint(inference_state(model, extractor, tokenizer), tmp_path / "copy.pt")
    a, b = Recognizer.load(model_path, "cpu"), Recognizer.load(copy, "cpu")
    paths = [json.loads(line)["audio_filepath"] for line in manifest.read_text().splitlines()]
    paths = [manifest.parent / p for p in paths[:3]]
    assert [t.text for t in a.transcribe(paths)] == [t.text for t in b.transcribe(paths)]
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name])


def test_resumed_training_matches_uninterrupted_training_bit_for_bit(trained_tiny, tmp_path):
    """Resume from epoch 39 and redo epoch 40: the weights equal the uninterrupted run's."""
    model_path, manifest, _ = trained_tiny
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(model_path.parent, out)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    (out / "checkpoints" / names[-1]).unlink()
    train(tiny_config(manifest, out, epochs=40, resume=True))
    original = load_checkpoint(model_path.parent / "checkpoints" / names[-1])
    resumed = load_checkpoint(out / "checkpoints" / names[-1])
    assert resumed["training"]["state"]["step"] == original["training"]["state"]["step"]
    for name, tensor in original["model"]["state_dict"].items():
        assert torch.equal(tensor, resumed["model"]["state_dict"][name]), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == names
    assert (out / "steps.tsv").read_text() == (model_path.parent / "steps.tsv").read_text()


def test_transcription_is_independent_of_container_and_batching(trained_tiny, tmp_path):
    """The same samples as WAV or FLAC, alone or batched, give one text."""
    import soundfile as sf

    model_path, manifest, rates = trained_tiny
    recognizer = Recognizer.load(model_path, "cpu")
    wav = rates.utterances[0].key
    samples, rate = sf.read(wav, dtype="float32")
    sf.write(tmp_path / "copy.flac", samples, rate)
    sf.write(tmp_path / "copy.mp3", samples, rate, format="MP3")
    expected = rates.utterances[0].hypothesis
    files = recognizer.transcribe([wav, tmp_path / "copy.flac", rates.utterances[1].key])
    assert [t.text for t in files[:2]] == [expected, expected]
    assert recognizer.transcribe([tmp_path / "copy.flac"])[0].text == expected
    # lossy, but still the trained words: at most one of the 8 wrong (an untrained model's are all wrong)
    from asr.scoring import score

    mp3 = recognizer.transcribe([tmp_path / "copy.mp3"])[0].text
    assert score([rates.utterances[0].reference], [mp3]).wer <= 12.5, (rates.utterances[0].reference, mp3)


def test_init_from_starts_with_the_given_weights_tokenizer_and_features(trained_tiny, tmp_path):
    """Fine-tuning: the run takes the initial model's tokenizer and 8 kHz features (the config
    asks for 16 kHz) and its first loss is the trained model's, far below a fresh model's."""
    model_path, manifest, _ = trained_tiny
    overrides = [o for o in tiny_overrides(manifest, tmp_path / "ft", epochs=1) if not o.startswith("features=")]
    fine = train(load_train_config([*overrides, f"trainer.init_from={model_path}", "optim.lr=0.0001"]))
    fresh = train(load_train_config([*overrides, "features=logmel40_8k", f"trainer.output_dir={tmp_path / 'fresh'}"]))
    first_loss = lambda path: float((path.parent / "steps.tsv").read_text().splitlines()[1].split("\t")[1])  # noqa: E731
    assert first_loss(fine) < 0.1 * first_loss(fresh)
    start, tuned = load_checkpoint(model_path), load_checkpoint(fine)
    assert tuned["tokenizer"] == start["tokenizer"] and tuned["features"]["config"] == start["features"]["config"]
    assert torch.equal(tuned["features"]["mean"], start["features"]["mean"])
    assert "sample_rate: 8000" in (fine.parent / "config.yaml").read_text()
    changed = [k for k, v in start["model"]["state_dict"].items() if not torch.equal(v, tuned["model"]["state_dict"][k])]
    assert changed  # it trained: fresh optimizer, the weights moved on
    assert Recognizer.load(fine, "cpu").evaluate(manifest).cer <= 5.0


def test_init_from_a_model_of_another_shape_is_one_clear_error(trained_tiny, tmp_path):
    model_path, manifest, _ = trained_tiny
    overrides = tiny_overrides(manifest, tmp_path / "ft", epochs=1)
    with pytest.raises(ConfigError) as caught:
        train(load_train_config([*overrides, f"trainer.init_from={model_path}", "model.hidden_size=96"]))
    assert str(caught.value) == (f"trainer.init_from={model_path}: its weights do not fit the model config: "
                                 "model.hidden_size=96 (the checkpoint has 64)")
    assert not (tmp_path / "ft" / "model.pt").exists()


def test_init_from_never_overwrites_the_model_it_starts_from(trained_tiny, tmp_path):
    import shutil

    model_path, manifest, _ = trained_tiny
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(model_path, out / "model.pt")
    before = (out / "model.pt").read_bytes()
    overrides = tiny_overrides(manifest, out, epochs=1)
    with pytest.raises(ConfigError, match="is this run's own output"):
        train(load_train_config([*overrides, f"trainer.init_from={out / 'model.pt'}"]))
    assert (out / "model.pt").read_bytes() == before
    for bad in (tmp_path / "missing.pt", manifest):
        with pytest.raises(ConfigError, match=f"^trainer.init_from={bad}: "):
            train(load_train_config([*overrides, f"trainer.init_from={bad}"]))
