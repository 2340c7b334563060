"""``asr export``: the ONNX graph gives the PyTorch model's log-probs on every architecture, exported
models run through every command, int8 stays close, and the torch-free runtime transcribes as the
full toolkit does."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch

import asr

from asr.checkpoint import inference_state, save_checkpoint
from asr.errors import AsrError, CheckpointError
from asr.export import export_onnx
from asr.features import FeatureConfig, FeatureExtractor, NormMode
from asr.model import AcousticModel, ModelConfig
from asr.onnx_model import OnnxModel
from asr.tokenizer import CharTokenizer, SentencePieceTokenizer, TextNormalization
from asr.transcribe import Recognizer
from conftest import run_cli

ARCHITECTURES = {
    "bilstm": dict(),
    "gru-projection-batchnorm": dict(cell="gru", projection_size=24, norm="batch"),
    "rnn-layernorm-conv": dict(cell="rnn", norm="layer", subsampling="conv", subsampling_factor=2, conv_channels=4),
    "unidirectional-lstm": dict(bidirectional=False, subsampling_factor=4),
}


def random_checkpoint(path: Path, tokenizer=None, **arch) -> Path:
    """A model of the given architecture with random weights (batch norm statistics too)."""
    torch.manual_seed(0)
    tokenizer = tokenizer or CharTokenizer(list(" abcdefgh"), TextNormalization())
    model = AcousticModel(ModelConfig(num_layers=3, hidden_size=32, **arch), 40, tokenizer.vocab_size).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    extractor = FeatureExtractor(FeatureConfig(sample_rate=8000, n_mels=40), torch.randn(40), torch.rand(40) + 0.5)
    return save_checkpoint(inference_state(model, extractor, tokenizer), path)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_onnx_log_probs_match_pytorch_on_a_padded_batch(arch, tmp_path):
    checkpoint = random_checkpoint(tmp_path / "model.pt", **ARCHITECTURES[arch])
    onnx_model = OnnxModel(export_onnx(checkpoint, tmp_path / "model.onnx"))
    torch_model = Recognizer.load(checkpoint, "cpu").model
    lengths = torch.tensor([97, 60, 1, 83])  # lengths not a multiple of the subsampling factor, one frame
    features = torch.randn(4, 97, 40) * (torch.arange(97) < lengths.unsqueeze(1)).unsqueeze(2)
    with torch.inference_mode():
        expected, expected_lengths = torch_model(features, lengths)
    log_probs, out_lengths = onnx_model(features.numpy(), lengths.numpy())
    assert out_lengths.tolist() == expected_lengths.tolist()
    assert log_probs.shape == tuple(expected.shape)
    np.testing.assert_allclose(log_probs, expected.numpy(), atol=1e-4)
    alone, _ = onnx_model(features[1:2, :60].numpy(), lengths[1:2].numpy())  # batching changes nothing
    np.testing.assert_allclose(alone[0], log_probs[1, : alone.shape[1]], atol=1e-5)


def test_sentencepiece_tokenizer_travels_in_the_metadata(tmp_path):
    texts = ["one two three", "three two one", "two one"] * 10
    tokenizer = SentencePieceTokenizer.train(texts, "bpe", 12, TextNormalization())
    checkpoint = random_checkpoint(tmp_path / "model.pt", tokenizer)
    loaded = OnnxModel(export_onnx(checkpoint, tmp_path / "model.onnx")).tokenizer
    ids = tokenizer.encode("three two one")
    assert loaded.encode("three two one") == ids and loaded.decode(ids) == "three two one"


def test_the_numpy_front_end_computes_the_torch_features(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "model.pt")
    onnx_model = OnnxModel(export_onnx(checkpoint, tmp_path / "model.onnx"))
    extractor = Recognizer.load(checkpoint, "cpu").extractor
    rng = np.random.default_rng(0)
    for samples in (rng.standard_normal(12345).astype(np.float32) * 0.1, np.zeros(50, np.float32) + 0.01):
        expected = extractor(torch.from_numpy(samples)).numpy()
        np.testing.assert_allclose(onnx_model.features(samples), expected, atol=2e-3)
    extractor.cfg.normalization = NormMode.utterance
    onnx_model.front["config"]["normalization"] = "utterance"
    samples = rng.standard_normal(8000).astype(np.float32)
    np.testing.assert_allclose(onnx_model.features(samples), extractor(torch.from_numpy(samples)).numpy(), atol=2e-3)


def test_exported_models_transcribe_evaluate_and_stream_like_the_checkpoint(trained_tiny, tmp_path):
    model_path, manifest, rates = trained_tiny
    exported = tmp_path / "model.onnx"
    assert run_cli("export", str(model_path), "-o", str(exported)).returncode == 0
    wavs = [u.key for u in rates.utterances[:3]]
    for args in (["transcribe", "--format", "json"], ["evaluate"]):
        inputs = wavs if args[0] == "transcribe" else [str(manifest)]
        torch_run = run_cli(args[0], str(model_path), *inputs, *args[1:])
        onnx_run = run_cli(args[0], str(exported), *inputs, *args[1:])
        assert torch_run.returncode == onnx_run.returncode == 0 and onnx_run.stdout == torch_run.stdout
    stream = ["stream", "--input", wavs[0], "--no-realtime", "--json"]
    torch_events = run_cli(stream[0], str(model_path), *stream[1:]).stdout.splitlines()
    onnx_events = run_cli(stream[0], str(exported), *stream[1:]).stdout.splitlines()
    finals = [[json.loads(e) for e in events if '"final"' in e] for events in (torch_events, onnx_events)]
    assert finals[0] == finals[1] and finals[0]
    assert any('"partial"' in e for e in onnx_events)


def test_int8_export_is_smaller_and_recognizes_alike(trained_tiny, tmp_path):
    model_path, manifest, rates = trained_tiny
    full = export_onnx(model_path, tmp_path / "fp32.onnx")
    small = export_onnx(model_path, tmp_path / "int8.onnx", int8=True)
    assert small.stat().st_size < full.stat().st_size / 2.5
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in onnx.load(small).graph.node)
    int8_rates = Recognizer.load(small).evaluate(manifest)
    assert abs(int8_rates.wer - rates.wer) <= 5.0, (int8_rates.summary(), rates.summary())


# what the torch extra installs beyond the onnx extra (pyproject.toml), by module name
TOOLKIT_ONLY = ("torch", "torchaudio", "librosa", "hydra", "omegaconf", "tqdm", "tensorboard", "flashlight",
                "sounddevice", "webrtcvad", "onnx")


def torch_free(*code: str) -> subprocess.CompletedProcess:
    """Python where the toolkit's own dependencies cannot be imported, as after `pip install asr[onnx]`."""
    prologue = f"import sys; sys.modules.update(dict.fromkeys({TOOLKIT_ONLY!r})); "
    command = [sys.executable, "-c", prologue + "; ".join(code)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_without_torch_asr_transcribe_runs_exported_models(trained_tiny, tmp_path):
    model_path, _, rates = trained_tiny
    exported = export_onnx(model_path, tmp_path / "model.onnx")
    wavs = [u.key for u in rates.utterances[:4]]
    for fmt in ("txt", "json"):
        full = run_cli("transcribe", str(exported), *wavs, "--format", fmt)
        main = f"from asr.cli import main; code = main({['transcribe', str(exported), *wavs, '--format', fmt]!r})"
        light = torch_free(main, "assert 'torch' not in sys.modules or sys.modules['torch'] is None", "sys.exit(code)")
        assert light.returncode == 0, light.stderr
        if fmt == "txt":
            assert light.stdout == full.stdout
        else:  # word edges: the CTC spans here, moved onto the speech by the full toolkit
            records = [[json.loads(line) for line in run.stdout.splitlines()] for run in (light, full)]
            assert [r["text"] for r in records[0]] == [r["text"] for r in records[1]] and "segments" in records[0][0]
    (tmp_path / "bad.wav").write_text("not audio")
    mixed = torch_free(f"from asr.cli import main; sys.exit(main(['transcribe', {str(exported)!r}, "
                       f"{str(tmp_path / 'bad.wav')!r}, {wavs[0]!r}]))")
    assert mixed.returncode == 1 and mixed.stdout.strip() == rates.utterances[0].hypothesis  # the good one is done
    assert f"asr: warning: {tmp_path / 'bad.wav'}: cannot read audio" in mixed.stderr
    refused = torch_free(f"from asr.cli import main; sys.exit(main(['transcribe', {str(model_path)!r}, {wavs[0]!r}]))")
    assert refused.returncode == 2 and "asr export" in refused.stderr and "Traceback" not in refused.stderr
    train = torch_free("from asr.cli import main; sys.exit(main(['train']))")
    assert train.returncode == 2 and "pip install 'asr[torch]'" in train.stderr


def test_bad_exported_models_give_one_line(trained_tiny, tmp_path):
    model_path, manifest, rates = trained_tiny
    wav = rates.utterances[0].key
    exported = export_onnx(model_path, tmp_path / "model.onnx")
    proto = onnx.load(exported)

    def variant(name: str, change) -> Path:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        entries = {e.key: e.value for e in copy.metadata_props}
        change(entries)
        del copy.metadata_props[:]
        copy.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in entries.items())
        onnx.save(copy, tmp_path / name)
        return tmp_path / name

    (tmp_path / "text.onnx").write_text("not a model\n")
    cases = {
        tmp_path / "text.onnx": "not an ONNX model",
        variant("plain.onnx", lambda m: m.clear()): "not one written by `asr export`",
        variant("future.onnx", lambda m: m.update({"asr.format_version": "99"})): "export format 99",
        variant("notok.onnx", lambda m: m.pop("asr.tokenizer")): "tokenizer metadata is missing",
        tmp_path / "missing.onnx": "model file not found",
    }
    for path, message in cases.items():
        result = run_cli("transcribe", str(path), wav)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"asr: error: {path}: ")
        assert message in lines[0]
        with pytest.raises(CheckpointError, match=message):
            Recognizer.load(path)
    assert "must end in .onnx" in run_cli("export", str(model_path), "-o", str(tmp_path / "m.pt")).stderr
    assert "checkpoint not found" in run_cli("export", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "m.onnx")).stderr
    assert "exported models run on the CPU" in run_cli("transcribe", str(exported), wav, "--device", "cuda").stderr
    sf.write(tmp_path / "low.wav", np.zeros(400, np.float32), 400)  # a rate no model takes
    assert run_cli("transcribe", str(exported), str(tmp_path / "low.wav")).stderr.strip() == (
        f"asr: error: {tmp_path / 'low.wav'}: sample rate 400 Hz is not audio (expected 1,000-1,000,000 Hz)")
    with pytest.raises(AsrError, match="sample_rate=0"):
        asr.load_model(exported).transcribe(np.zeros(800, np.float32), sample_rate=0)
