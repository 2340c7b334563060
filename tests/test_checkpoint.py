import pytest
import torch

from asr.checkpoint import FORMAT_VERSION, build_components, inference_state, load_checkpoint, save_checkpoint
from asr.errors import CheckpointError
from asr.features import FeatureConfig, FeatureExtractor, NormMode
from asr.model import AcousticModel, CellType, ModelConfig
from asr.tokenizer import TokenizerConfig, TokenizerKind, train_tokenizer


@pytest.fixture
def saved(tmp_path):
    tokenizer = train_tokenizer(TokenizerConfig(kind=TokenizerKind.bpe, vocab_size=30), ["one two three four"] * 10)
    extractor = FeatureExtractor(FeatureConfig(n_mels=20, normalization=NormMode.utterance), torch.rand(20), torch.rand(20) + 1)
    model = AcousticModel(ModelConfig(cell=CellType.gru, num_layers=1, hidden_size=8), 20, tokenizer.vocab_size)
    return save_checkpoint(inference_state(model, extractor, tokenizer), tmp_path / "m.pt"), model, extractor, tokenizer


def test_round_trip_restores_every_component(saved):
    path, model, extractor, tokenizer = saved
    model2, extractor2, tokenizer2 = build_components(load_checkpoint(path))
    assert model2.cfg == model.cfg and extractor2.cfg == extractor.cfg
    assert torch.equal(extractor2.mean, extractor.mean) and torch.equal(extractor2.std, extractor.std)
    assert tokenizer2.encode("one two") == tokenizer.encode("one two")
    for name, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[name])
    assert not model2.training


def test_malicious_pickle_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)


def test_truncated_checkpoint(saved, tmp_path):
    path = saved[0]
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(cut)


def test_future_format_version_and_non_checkpoints(saved, tmp_path):
    state = torch.load(saved[0], weights_only=True)
    state["format_version"] = FORMAT_VERSION + 1
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="newer than this asr supports"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an asr checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_architecture_is_reported(saved):
    state = load_checkpoint(saved[0])
    state["model"]["config"]["hidden_size"] = 9
    with pytest.raises(CheckpointError, match="incompatible checkpoint"):
        build_components(state)


def test_save_replaces_in_one_step_and_leaves_no_temporary_files(saved):
    path, model, extractor, tokenizer = saved
    save_checkpoint({"format_version": FORMAT_VERSION, "x": torch.ones(1)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(1))


def test_format_1_training_checkpoint_is_read_as_today(tmp_path):
    """Format 1 kept the run's counters beside the optimizer and the epoch's sums as a list; it
    loads as a format-2 checkpoint whose TrainState holds the same values, and resumes."""
    from asr.train_state import TrainState

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), fused=False)
    old = {"format_version": 1, "training": {
        "step": 7, "epoch": 1, "batch_in_epoch": 3, "epoch_totals": [2.5, 2, 900, 1.5, 0.25], "best": [12.0, 4.0],
        "bad_epochs": 0, "skipped_steps": 1, "nonfinite_in_row": 0, "optimizer": optimizer.state_dict(),
        "scheduler": {}, "scaler": {}, "torch_rng": torch.get_rng_state(), "cuda_rng": []}}
    torch.save(old, tmp_path / "step-000000007.pt")
    training = load_checkpoint(tmp_path / "step-000000007.pt")["training"]
    state = TrainState.from_dict(training["state"])
    assert state == TrainState(step=7, epoch=1, batch_in_epoch=3, best=(12.0, 4.0), skipped_steps=1, epoch_loss=2.5,
                               epoch_steps=2, epoch_frames=900, epoch_seconds=1.5, epoch_data_wait=0.25)
    assert (training["world_size"], training["grad_accum_steps"], training["cuda_rng"]) == (1, 1, None)
    fused = torch.optim.AdamW(model.parameters(), fused=True)
    fused.load_state_dict(training["optimizer"])  # an unfused optimizer's state loads into today's fused one
