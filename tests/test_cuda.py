"""The CUDA path: packed cuDNN recurrence, bf16 / fp16 autocast, GPU transcription. CI has no GPU,
so these skip there; run them on a machine with one (`pytest tests/test_cuda.py`)."""

from __future__ import annotations

import math

import pytest
import torch

from asr.checkpoint import load_checkpoint
from asr.config import load_train_config
from asr.data import Example, collate
from asr.model import AcousticModel, ModelConfig, NormKind, Subsampling
from asr.train import train
from asr.devices import grad_scaler
from asr.train_step import train_step
from asr.transcribe import Recognizer
from conftest import tiny_overrides

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def padded_batch(lengths: list[int], dim: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    feats = torch.zeros(len(lengths), max(lengths), dim)
    for i, n in enumerate(lengths):
        feats[i, :n] = torch.randn(n, dim, generator=g)
    return feats, torch.tensor(lengths)


def test_gpu_model_matches_the_cpu_model_in_fp32(monkeypatch):
    """cuDNN on packed sequences (GPU) against oneDNN on the reversed padded batch (CPU)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cfg = ModelConfig(num_layers=3, hidden_size=64, norm=NormKind.batch, subsampling=Subsampling.conv, subsampling_factor=2)
    torch.manual_seed(0)
    model = AcousticModel(cfg, 40, 30).eval()
    feats, lengths = padded_batch([300, 120, 47, 299])
    with torch.no_grad():
        cpu, _ = model(feats, lengths)
        gpu, _ = model.cuda()(feats.cuda(), lengths.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-4, rtol=2e-4)


def test_cudnn_lstm_runs_in_float16_under_bf16_autocast():
    """Why asr train scales the loss under bf16 on GPUs (asr.devices.grad_scaler). If this fails,
    PyTorch runs cuDNN RNNs in bf16 now and the scaler could be limited to fp16 again."""
    rnn = torch.nn.LSTM(16, 16, batch_first=True).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = rnn(torch.randn(2, 5, 16, device="cuda"))
    assert out.dtype == torch.float16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_steps_lower_the_loss(dtype):
    """asr train's step on the GPU under autocast, with loss scaling as asr train has it: the loss falls."""
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=128, dropout=0.0), 40, 12).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    scaler = grad_scaler(torch.device("cuda"), dtype)
    assert scaler.is_enabled()  # bf16 too: cuDNN's LSTMs run in float16 under any autocast
    feats, lengths = padded_batch([200, 180, 150, 90])
    targets = torch.randint(1, 12, (4, 20))
    batch = collate([Example(feats[i, :n], targets[i], i) for i, n in enumerate(lengths.tolist())]).pin_memory()
    outcomes = [train_step(model, model, optimizer, scaler, [batch], dtype) for _ in range(30)]
    assert all(math.isfinite(o.loss) for o in outcomes)
    assert sum(o.finite for o in outcomes) >= 25  # the scaler may skip a few early steps (inf gradients)
    assert outcomes[-1].loss < 0.5 * outcomes[0].loss


def test_a_batch_whose_utterances_were_all_skipped_steps_on_the_gpu():
    """The zero-loss pass runs cuDNN in training mode (it has no backward for an evaluating RNN)."""
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=32, norm=NormKind.batch), 40, 12).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    outcome = train_step(model, model, optimizer, torch.amp.GradScaler("cuda", enabled=False), [collate([])])
    assert outcome.finite and outcome.loss == 0.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_asr_train_on_gpu_then_transcribe_on_gpu_and_cpu(yesno_dir, tmp_path, precision, monkeypatch):
    """A tiny model overfits 8 real recordings on the GPU with autocast and a loader worker
    (pinned batches); it then transcribes them alike on the GPU and on the CPU (TF32 off, so a
    near tie cannot flip a character between the two)."""
    from asr.audio import audio_info
    from asr.data import Utterance, write_manifest

    files = sorted(yesno_dir.glob("*.wav"))[:8]
    words = [" ".join("yes" if c == "1" else "no" for c in f.stem.split("_")) for f in files]
    manifest = write_manifest(tmp_path / "train.jsonl", [Utterance(f, audio_info(f)[1], w) for f, w in zip(files, words)])
    overrides = [o for o in tiny_overrides(manifest, tmp_path / "exp", epochs=40) if not o.startswith("trainer.device")]
    cfg = load_train_config([*overrides, "trainer.device=cuda", f"trainer.precision={precision}", "data.num_workers=1"])
    model_path = train(cfg)
    assert load_checkpoint(model_path)["model"]
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    gpu = Recognizer.load(model_path, "cuda")
    assert gpu.evaluate(manifest).cer <= 10.0  # it learned the words on the GPU
    paths = [str(f) for f in files]
    cpu_texts = [t.text for t in Recognizer.load(model_path, "cpu").transcribe(paths)]
    assert [t.text for t in gpu.transcribe(paths)] == cpu_texts


def test_streaming_on_the_gpu_with_gpu_beam_search_finals_match_offline(trained_tiny):
    """asr stream --model-device cuda --decode beam: the final pass decodes with the GPU beam search."""
    import json

    from asr.decoding import DecodeMethod, DecodingOptions
    from asr.sources import file_blocks
    from asr.stream import StreamingRecognizer, StreamOptions, stream_events

    model_path, manifest, _ = trained_tiny
    recognizer = Recognizer.load(model_path, "cuda", DecodingOptions(method=DecodeMethod.beam, beam_size=8))
    path = json.loads(manifest.read_text().splitlines()[0])["audio_filepath"]
    # one segment, all of it heard by the final pass, as offline transcription hears the file
    whole = StreamOptions(chunk_ms=60_000, endpoint_silence_ms=60_000, max_segment_s=600, trim_db=0)
    events = list(stream_events(StreamingRecognizer(recognizer, whole), file_blocks(path, recognizer.sample_rate, False)))
    finals = [e.text for e in events if e.type == "final"]
    assert finals == [recognizer.transcribe([path])[0].text] and finals[0]


def test_speaker_adaptation_fits_on_the_gpu_as_on_the_cpu(monkeypatch):
    """cuDNN's recurrent kernels have no backward pass in eval mode; the fit must still run there."""
    from asr.adaptation import AdaptOptions, ScaleShift, fit_scale_shift

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=32), 40, 12).eval()
    features, targets = [torch.randn(n, 40) for n in (50, 80)], [[1, 2, 3], [4, 5]]
    options = AdaptOptions(epochs=3)
    cpu = fit_scale_shift(model, features, targets, ScaleShift.identity(40), options)
    gpu = fit_scale_shift(model.cuda(), features, targets, ScaleShift.identity(40), options)
    assert cpu.log_scale.abs().max() > 1e-3  # it moved
    assert torch.allclose(cpu.log_scale, gpu.log_scale, atol=1e-3) and torch.allclose(cpu.shift, gpu.shift, atol=1e-3)
