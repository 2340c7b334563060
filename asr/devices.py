"""The compute device and numeric precision a config asks for, as this machine can give them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from asr.errors import ConfigError

if TYPE_CHECKING:
    from asr.config import Precision


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1, field: str = "trainer.device") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` (the GPU of this process's LOCAL_RANK) | ``cuda:N``; errors
    name ``field``."""
    if world_size > 1 and name.startswith("cuda:"):
        raise ConfigError(f"{field}={name!r}: with several processes each takes the GPU of its LOCAL_RANK; "
                          f"use {field}=cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda":  # one GPU per process under torchrun
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{field}={name!r}: not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field}={name!r}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"{field}={name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """The autocast dtype (float32 means no autocast)."""
    from asr.config import Precision

    precision = Precision(precision)
    if precision is Precision.auto:
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if precision is Precision.fp16 and device.type != "cuda":
        raise ConfigError("trainer.precision='fp16': needs a CUDA device (use fp32 or bf16)")
    if precision is Precision.bf16 and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # oneDNN has no bfloat16 LSTM without the instructions (AVX-512 BF16 / AMX)
        raise ConfigError("trainer.precision='bf16': this CPU has no bfloat16 instructions (use fp32)")
    return {Precision.fp32: torch.float32, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}[precision]


def grad_scaler(device: torch.device, amp_dtype: torch.dtype) -> torch.amp.GradScaler:
    """Loss scaling for any autocast on a GPU, bf16 included: PyTorch's autocast wrapper for cuDNN
    RNNs casts to float16 whatever the autocast dtype (aten/src/ATen/cudnn/AutocastRNN.cpp), so
    the recurrent layers' gradients are float16 under bf16 too and can underflow unscaled."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and amp_dtype != torch.float32)
