"""asr.kernels: the padded CPU and packed GPU recurrences agree, compiling changes nothing, the
blocks between layers survive autocast, and FastDropout drops at its rate."""

import copy
import dataclasses
import shutil

import pytest
import torch

from asr.kernels import FastDropout, Kernel, compile_non_recurrent
from asr.model import AcousticModel, ModelConfig, NormKind, Subsampling
from test_model import CONFIGS, batch


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=lambda c: c.cell.value)
def test_packed_recurrence_used_on_gpus_matches_the_padded_one(cfg):
    """CUDA runs each layer on a packed sequence (cuDNN), CPUs on the padded batch: same outputs
    and gradients (forced here on the CPU, so CI checks the GPU path's arithmetic)."""
    torch.manual_seed(0)
    padded_model = AcousticModel(dataclasses.replace(cfg, dropout=0.0), 20, 7, kernel=Kernel.padded).train()
    packed_model = AcousticModel(dataclasses.replace(cfg, dropout=0.0), 20, 7, kernel=Kernel.packed).train()
    packed_model.load_state_dict(padded_model.state_dict())
    feats, lengths = batch([37, 50, 11, 24])
    results = []
    for model in (padded_model, packed_model):
        log_probs, out_lengths = model(feats, lengths)
        (log_probs * torch.linspace(0, 1, log_probs.shape[-1])).sum().backward()
        results.append((log_probs.detach(), [p.grad.clone() for p in model.parameters()]))
    (padded, padded_grads), (packed_out, packed_grads) = results
    torch.testing.assert_close(padded, packed_out, atol=1e-5, rtol=1e-5)
    for a, b in zip(padded_grads, packed_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_non_recurrent_parts_give_the_same_outputs_and_state_dict():
    torch.manual_seed(0)
    cfg = ModelConfig(num_layers=2, hidden_size=8, projection_size=6, norm=NormKind.batch, subsampling=Subsampling.conv,
                      subsampling_factor=2, conv_channels=4)
    plain = AcousticModel(cfg, input_dim=20, vocab_size=7).eval()
    compiled = AcousticModel(cfg, input_dim=20, vocab_size=7).eval()
    compiled.load_state_dict(plain.state_dict())
    compile_non_recurrent(compiled)
    assert compiled.state_dict().keys() == plain.state_dict().keys()  # checkpoints unchanged
    copied = copy.deepcopy(compiled)
    with torch.no_grad():
        copied.classifier.weight.mul_(2)  # a copy scores with its own weights
        for lengths in ([37, 50, 11], [12, 9]):  # two shapes: the graphs are dynamic
            feats, n = batch(lengths)
            torch.testing.assert_close(compiled(feats, n)[0], plain(feats, n)[0], atol=1e-5, rtol=1e-5)
        plain.classifier.weight.mul_(2)
        torch.testing.assert_close(copied(feats, n)[0], plain(feats, n)[0], atol=1e-5, rtol=1e-5)


CPU_BF16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # oneDNN's bf16 LSTM needs the instructions


@pytest.mark.parametrize("packed", [pytest.param(False, marks=pytest.mark.skipif(not CPU_BF16, reason="no bf16 CPU")), True])
def test_autocast_with_projection_and_layer_norm_between_layers(packed):
    """Under autocast the recurrent outputs and the blocks between layers may come out in
    different dtypes (a packed cuDNN LSTM gives float16, a LayerNorm float32)."""
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=8, projection_size=6, norm=NormKind.layer), 20, 7,
                          kernel=Kernel.packed if packed else Kernel.padded)
    feats, lengths = batch([30, 21])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, _ = model(feats, lengths)
    assert log_probs.dtype == torch.float32 and torch.isfinite(log_probs).all()


@pytest.mark.parametrize("packed", [False, True])
def test_zero_frames_give_an_empty_output(packed):
    kernel = Kernel.packed if packed else Kernel.padded  # packed: the GPU's code path
    model = AcousticModel(ModelConfig(num_layers=2, hidden_size=8), 20, 7, kernel=kernel).eval()
    log_probs, out_lengths = model(torch.zeros(2, 0, 20), torch.tensor([0, 0]))
    assert log_probs.shape == (2, 0, 7) and out_lengths.tolist() == [0, 0]


def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean():
    torch.manual_seed(0)
    drop = FastDropout(0.1)
    x = torch.ones(200, 501, requires_grad=True)  # odd element count: the last 32-bit draw is half used
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient: the same mask and scale
    assert not torch.equal(kept, drop(x) != 0)  # a new mask each call
    assert torch.equal(drop.eval()(x), x)
