"""GPU hours of a training config on paper: parameters, training FLOPs per second of audio, and the
time for a corpus at an assumed fraction of a GPU's peak.

    python tools/estimate_gpu_hours.py --config-name librispeech --hours 960 --epochs 30 \
        --peak-tflops 312 --utilization 0.25 --gpus 8

FLOPs: every weight is used once per output frame in a multiply-add (2 FLOPs) by the recurrent
stack and the output layer, the convolutional front end once per input patch; training costs
about 3x the forward pass (forward + two backward matmuls). Padding is ignored (buckets keep it
small); the utilization is the assumption that carries the estimate -- measure it with
tools/bench_train.py on the GPU you have.
"""

from __future__ import annotations

import argparse
import math

import torch

from asr.config import load_train_config
from asr.model import AcousticModel, Subsampling


def model_flops_per_second(model: AcousticModel, hop_ms: float) -> tuple[float, float]:
    """(forward, training) FLOPs of ``model`` per second of audio at ``hop_ms`` feature frames."""
    frames_out = 1000.0 / hop_ms / model.cfg.subsampling_factor
    conv = sum(p.numel() for n, p in model.named_parameters() if n.startswith("subsample."))
    forward = 2 * (model.num_parameters() - conv) * frames_out
    if model.cfg.subsampling is Subsampling.conv:
        # each conv weight is applied at every output position: time x (frequency / 2)
        forward += 2 * conv * frames_out * math.ceil(model.input_dim / 2)
    return forward, 3 * forward


def training_flops_per_second(config_name: str, overrides: list[str]) -> tuple[int, float, float]:
    """(parameters, forward FLOPs per audio second, training FLOPs per audio second)."""
    cfg = load_train_config(["data.train_manifest=x", "data.dev_manifest=x", *overrides], config_name)
    with torch.device("meta"):
        model = AcousticModel(cfg.model, cfg.features.n_mels, vocab_size=128)
    return model.num_parameters(), *model_flops_per_second(model, cfg.features.hop_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-name", default="config")
    parser.add_argument("--hours", type=float, required=True, help="hours of training audio per epoch")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's trainer.epochs")
    parser.add_argument("--peak-tflops", type=float, default=312.0, help="dense bf16 peak (A100: 312, H100 SXM: 989)")
    parser.add_argument("--utilization", type=float, default=0.25, help="assumed fraction of the peak reached")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    params, forward, train = training_flops_per_second(args.config_name, args.overrides)
    cfg = load_train_config(["data.train_manifest=x", "data.dev_manifest=x", *args.overrides], args.config_name)
    epochs = args.epochs or cfg.trainer.epochs
    total = train * args.hours * 3600 * epochs
    gpu_hours = total / (args.peak_tflops * 1e12 * args.utilization) / 3600
    print(f"{args.config_name}: {params / 1e6:.1f} M parameters, {forward / 1e9:.1f} GFLOP forward and "
          f"{train / 1e9:.1f} GFLOP training per second of audio")
    print(f"{args.hours:g} h x {epochs} epochs = {total:.3g} FLOP; at {args.utilization:.0%} of {args.peak_tflops:g} TFLOP/s: "
          f"{gpu_hours:.1f} GPU-hours, {gpu_hours / args.gpus:.1f} h wall-clock on {args.gpus} GPU(s)")


if __name__ == "__main__":
    main()
