"""What the training loop stands on but does not decide: device and precision from the config,
the learning-rate schedule, and the run's log files."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path

import torch

from asr.config import DecayKind, Precision
from asr.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    if world_size > 1 and name.startswith("cuda:"):
        raise ConfigError(f"trainer.device={name!r}: with several processes each takes the GPU of its LOCAL_RANK; "
                          "use trainer.device=cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda":  # one GPU per process under torchrun
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r}: CUDA is not available on this machine")
    return device


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """The autocast dtype (float32 means no autocast)."""
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


def lr_factor(step: int, total_steps: int, warmup: int, decay: DecayKind, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine or exponential decay down to ``min_ratio`` at the end."""
    if step < warmup:
        return (step + 1) / warmup
    decay = DecayKind(decay)
    if decay is DecayKind.none:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if decay is DecayKind.cosine:
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio**progress


class Silent:
    """Stands in for the step log and TensorBoard writer on ranks other than 0."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def ignore_sigint(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which finishes its step and checkpoints;
    otherwise a worker dies on the signal and the next fetch fails before the checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def open_step_log(path: Path, step: int):
    """``steps.tsv`` (step, loss, learning rate per line) kept to the first ``step`` steps, so a
    resumed run's log holds each step once, as an uninterrupted run's does."""
    kept = []
    if step and path.exists():
        kept = [line for line in path.read_text().splitlines(keepends=True) if line.split("\t")[0].isdigit()
                and int(line.split("\t")[0]) <= step and line.endswith("\n")]
    log_file = open(path, "w", buffering=1 << 16)
    log_file.write("step\tloss\tlr\n")
    log_file.writelines(kept)
    return log_file


def attach_file_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def rng_state(device: torch.device) -> dict:
    """The random state to checkpoint: the CPU generator's and this process's GPU generator's."""
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng_state(training: dict, device: torch.device, rank: int, seed: int, step: int) -> None:
    """Continue rank 0's random streams from the checkpoint; the other ranks derive theirs from
    the seed, their rank and the step (each rank has its own dropout masks). Checkpoints of
    older versions hold a list with every visible GPU's state (or an empty one)."""
    torch.set_rng_state(training["torch_rng"])
    cuda = training.get("cuda_rng")
    if isinstance(cuda, list):
        cuda = cuda[device.index or 0] if device.type == "cuda" and len(cuda) > (device.index or 0) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    if rank:
        torch.manual_seed(seed + 7919 * rank + step)  # CPU and every GPU generator
