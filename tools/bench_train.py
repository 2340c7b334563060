"""Training throughput: asr's training step against a plain reference loop, and against the
machine's matmul roofline, side by side in one run.

    python tools/bench_train.py MANIFEST [--config-name synth] [--utterances 0] [--rounds 5]
        [--steps 8] [--device cpu] [--precision fp32] [--no-reference] [OVERRIDES ...]

Both loops train the same model dimensions on the same precomputed features (feature extraction
is out of the measurement: in real training it runs in loader workers, or between steps on a CPU
of 4 cores or fewer). Reported per loop: useful frames per second (10 ms feature frames of real
audio, padding not counted), the padded share of the frames computed, and seconds per step.
asr's loop is the step ``asr train`` runs (``asr.train_step.train_step``) on the batches its
sampler cuts: jittered length buckets capped by padded frames, each recurrent direction on the
padded batch (the backward one reversed within each length; on a GPU, cuDNN on packed sequences,
batches pinned), dropout, gradient clipping, fused AdamW. The reference
(tools/reference_train_loop.py) takes random fixed-size batches of the same mean size and runs
one multi-layer ``nn.LSTM`` over the padding, without dropout or clipping.

Shared machines drift by tens of percent from minute to minute, so the loops alternate: each of
``--rounds`` rounds runs ``--steps`` steps of one, then of the other, and the table gives each
round and the medians. Roofline: training FLOPs per second on useful frames only (counted as
tools/estimate_gpu_hours.py counts them: 3 x the forward pass, 2 FLOPs per weight per output
frame, the conv front end per position) against the best float32 (or --precision) matmul rate measured on
the same device in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr.config import load_train_config  # noqa: E402
from asr.data import BucketBatchSampler, Example, SpeechDataset, collate, read_manifest  # noqa: E402
from asr.features import FeatureExtractor, feature_stats  # noqa: E402
from asr.model import AcousticModel  # noqa: E402
from asr.tokenizer import train_tokenizer  # noqa: E402
from asr.devices import grad_scaler  # noqa: E402
from asr.train_step import train_step  # noqa: E402
from estimate_gpu_hours import model_flops_per_second  # noqa: E402
from reference_train_loop import PlainBiLSTM, plain_steps  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """The best of three timings of ``repeats`` square matmuls: the roofline the loops are held to
    (2048 on a CPU, 8192 on a GPU, which smaller products leave far from its peak)."""
    size = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        torch.mm(a, b)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def load_features(manifest: str, cfg, count: int):
    utts = read_manifest(manifest)
    utts = utts[:count] if count else utts
    extractor = FeatureExtractor(cfg.features)
    plain = SpeechDataset(utts, extractor)
    raw = [extractor.log_mel(plain.waveform(i)) for i in range(len(utts))]
    extractor.set_stats(*feature_stats(raw))
    tokenizer = train_tokenizer(cfg.tokenizer, [u.text for u in utts])
    return [extractor.normalize(f) for f in raw], [torch.tensor(tokenizer.encode(u.text)) for u in utts], tokenizer


class AsrLoop:
    """asr's training step over the epoch's batches, taken ``steps`` at a time, cyclically."""

    def __init__(self, cfg, features, targets, vocab: int, device: torch.device, dtype: torch.dtype):
        torch.manual_seed(0)
        self.device, self.dtype, self.clip = device, dtype, cfg.optim.clip_grad_norm
        self.model = AcousticModel(cfg.model, features[0].shape[1], vocab).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True)
        self.scaler = grad_scaler(device, dtype)  # as asr train: any autocast on a GPU
        sampler = BucketBatchSampler([f.shape[0] for f in features], cfg.data.max_frames_per_batch,
                                     cfg.data.num_buckets, True, 0, cfg.data.length_jitter)
        self.batches = [collate([Example(features[i], targets[i], i) for i in b]) for b in sampler.batches(0)]
        if device.type == "cuda":  # pinned, as asr train's loader gives them (non-blocking copies)
            self.batches = [b.pin_memory() for b in self.batches]
        self.next = 0
        self.mean_batch = sum(len(b.indices) for b in self.batches) / len(self.batches)
        self.padding = 1 - sum(b.num_frames for b in self.batches) / sum(b.features.shape[0] * b.features.shape[1] for b in self.batches)

    def run(self, steps: int) -> tuple[int, float]:
        """Train ``steps`` steps; returns (useful frames, seconds)."""
        useful = 0
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            batch = self.batches[self.next % len(self.batches)]
            self.next += 1
            train_step(self.model, self.model, self.optimizer, self.scaler, [batch], self.dtype, self.clip)
            useful += batch.num_frames
        synchronize(self.device)
        return useful, time.perf_counter() - start


class ReferenceLoop:
    """tools/reference_train_loop.py's plain loop, ``steps`` batches at a time."""

    def __init__(self, cfg, features, targets, vocab: int, batch_size: int, device: torch.device):
        torch.manual_seed(0)
        self.device = device
        self.model = PlainBiLSTM(features[0].shape[1], cfg.model.subsampling_factor, cfg.model.hidden_size,
                                 cfg.model.num_layers, vocab).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.features, self.targets, self.batch_size, self.seed = features, targets, batch_size, 0

    def run(self, steps: int) -> tuple[int, float]:
        synchronize(self.device)
        start = time.perf_counter()
        useful = plain_steps(self.model, self.optimizer, self.features, self.targets, self.batch_size,
                             seed=self.seed, steps=steps, device=self.device)
        synchronize(self.device)
        self.seed += 1
        return useful, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--config-name", default="synth")
    parser.add_argument("--utterances", type=int, default=0, help="first N utterances (0: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="steps of each loop per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp32", help="autocast dtype of asr's loop")
    parser.add_argument("--no-reference", action="store_true", help="time asr's loop alone (large models)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=ds2_5x1024")
    args = parser.parse_intermixed_args()  # overrides may follow options
    if args.precision != "fp32" and not args.no_reference:
        parser.error("--precision other than fp32 needs --no-reference (the reference loop runs in float32)")
    device, dtype = torch.device(args.device), DTYPES[args.precision]
    cfg = load_train_config(["data.train_manifest=x", "data.dev_manifest=x", *args.overrides], args.config_name)
    features, targets, tokenizer = load_features(args.manifest, cfg, args.utterances)
    ours = AsrLoop(cfg, features, targets, tokenizer.vocab_size, device, dtype)
    batch_size = max(1, round(ours.mean_batch))
    loops = {"asr": ours}
    if not args.no_reference:
        loops["reference"] = ReferenceLoop(cfg, features, targets, tokenizer.vocab_size, batch_size, device)
    for loop in loops.values():
        loop.run(2)  # warm-up: allocators, kernels, first-touch memory
    rates: dict[str, list[float]] = {name: [] for name in loops}
    step_seconds: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            useful, seconds = loop.run(args.steps)
            rates[name].append(useful / seconds)
            step_seconds[name].append(seconds / args.steps)
    peak = matmul_gflops(device, dtype)
    report(args, cfg, ours, batch_size, len(features), rates, step_seconds, peak)


def report(args, cfg, ours: AsrLoop, batch_size: int, utterances: int, rates, step_seconds, peak: float) -> None:
    params = ours.model.num_parameters()
    flops_per_frame = model_flops_per_second(ours.model, cfg.features.hop_ms)[1] * cfg.features.hop_ms / 1000
    device = args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()})"
    if args.device.startswith("cuda"):
        device = f"{args.device} ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(f"command: {' '.join(sys.argv)}")
    print(f"device: {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, precision {args.precision}")
    print(f"model: {args.config_name} {' '.join(args.overrides)}: {params:,} parameters; {utterances} utterances, "
          f"asr mean batch {ours.mean_batch:.1f} (padding {ours.padding:.1%}), reference batch {batch_size}; "
          f"{args.rounds} rounds x {args.steps} steps")
    print(f"{'loop':<10} {'useful frames/s per round':<44} {'median':>8} {'s/step':>7}")
    for name in rates:
        rounds = " ".join(f"{r:>7,.0f}" for r in rates[name])
        print(f"{name:<10} {rounds:<44} {statistics.median(rates[name]):>8,.0f} {statistics.median(step_seconds[name]):>7.3f}")
    median = statistics.median(rates["asr"])
    if "reference" in rates:
        ratios = [a / r for a, r in zip(rates["asr"], rates["reference"])]
        print(f"speed-up over the reference: median {statistics.median(ratios):.2f}x "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
    achieved = median * flops_per_frame / 1e9
    print(f"roofline: {achieved:.1f} GFLOP/s of training on useful frames against {peak:.1f} GFLOP/s "
          f"{args.precision} matmul = {achieved / peak:.0%}")


if __name__ == "__main__":
    main()
