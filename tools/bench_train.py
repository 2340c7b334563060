"""Training throughput: asr's training step against a plain reference loop, and against the
machine's matmul roofline.

    python tools/bench_train.py MANIFEST [--config-name synth] [--utterances 600] [--steps 40]

Both loops train the same model dimensions on the same precomputed features (feature extraction
is out of the measurement: it runs in loader workers during real training). Reported per loop:
useful frames per second (10 ms feature frames of real audio, padding not counted), the padded
share of the frames computed, and seconds per step. asr's loop is what ``asr train`` runs:
duration buckets capped by padded frames, packed sequences through the recurrent stack. The
reference (tools/reference_train_loop.py) takes random fixed-size batches of the same mean size
and runs the LSTM over the padding. Roofline: training FLOPs per second (6 x the weights used per
output frame) against the best float32 matmul rate measured on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr.config import load_train_config  # noqa: E402
from asr.data import BucketBatchSampler, Example, SpeechDataset, collate, read_manifest  # noqa: E402
from asr.features import FeatureExtractor, feature_stats  # noqa: E402
from asr.model import AcousticModel, ctc_loss  # noqa: E402
from asr.tokenizer import train_tokenizer  # noqa: E402
from reference_train_loop import PlainBiLSTM, plain_epoch  # noqa: E402


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def load_features(manifest: str, cfg, count: int):
    utts = read_manifest(manifest)[:count]
    extractor = FeatureExtractor(cfg.features)
    plain = SpeechDataset(utts, extractor)
    raw = [extractor.log_mel(plain.waveform(i)) for i in range(len(utts))]
    extractor.set_stats(*feature_stats(raw))
    tokenizer = train_tokenizer(cfg.tokenizer, [u.text for u in utts])
    return [extractor.normalize(f) for f in raw], [torch.tensor(tokenizer.encode(u.text)) for u in utts], tokenizer


def asr_loop(cfg, features, targets, vocab: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = AcousticModel(cfg.model, features[0].shape[1], vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sampler = BucketBatchSampler([f.shape[0] for f in features], cfg.data.max_frames_per_batch, cfg.data.num_buckets, True, 0)
    batches = [collate([Example(features[i], targets[i], i) for i in b]) for b in sampler.batches(0)][: steps + 2]
    model.train()
    useful = computed = 0
    for n, batch in enumerate(batches):
        if n == 2:  # the first steps warm up allocators and kernels
            start, useful, computed = time.perf_counter(), 0, 0
        log_probs, out_lengths = model(batch.features, batch.lengths)
        loss = ctc_loss(log_probs, out_lengths, batch.targets, batch.target_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        useful += batch.num_frames
        computed += batch.features.shape[0] * batch.features.shape[1]
    seconds = time.perf_counter() - start
    mean_batch = sum(len(b.indices) for b in batches) / len(batches)
    return {"steps": len(batches) - 2, "useful": useful / seconds, "padding": 1 - useful / computed,
            "step_s": seconds / (len(batches) - 2), "mean_batch": mean_batch, "params": model.num_parameters()}


def reference_loop(cfg, features, targets, vocab: int, batch_size: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = PlainBiLSTM(features[0].shape[1], cfg.model.subsampling_factor, cfg.model.hidden_size, cfg.model.num_layers, vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    plain_epoch(model, optimizer, features, targets, batch_size, seed=1, max_steps=2)  # warm-up
    start = time.perf_counter()
    done, useful = plain_epoch(model, optimizer, features, targets, batch_size, seed=0, max_steps=steps)
    seconds = time.perf_counter() - start
    return {"steps": done, "useful": useful / seconds, "step_s": seconds / done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--config-name", default="synth")
    parser.add_argument("--utterances", type=int, default=600)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_train_config(["data.train_manifest=x", "data.dev_manifest=x", *args.overrides], args.config_name)
    features, targets, tokenizer = load_features(args.manifest, cfg, args.utterances)
    ours = asr_loop(cfg, features, targets, tokenizer.vocab_size, args.steps)
    batch = max(1, round(ours["mean_batch"]))
    plain = reference_loop(cfg, features, targets, tokenizer.vocab_size, batch, args.steps)
    peak = matmul_gflops()
    flops_per_frame = 6 * ours["params"] / cfg.model.subsampling_factor  # per 10 ms input frame, training
    achieved = ours["useful"] * flops_per_frame / 1e9
    print(f"{args.config_name}: {ours['params']:,} parameters, {torch.get_num_threads()} threads, "
          f"{len(features)} utterances, mean batch {ours['mean_batch']:.1f}")
    print(f"asr loop       {ours['useful']:>9,.0f} useful frames/s  padding {ours['padding']:5.1%}  "
          f"{ours['step_s']:.3f} s/step ({ours['steps']} steps)")
    print(f"reference loop {plain['useful']:>9,.0f} useful frames/s  (batch {batch}, random order, "
          f"unpacked)  {plain['step_s']:.3f} s/step ({plain['steps']} steps)")
    print(f"speed-up {ours['useful'] / plain['useful']:.2f}x;  roofline: {achieved:.1f} GFLOP/s of "
          f"training against {peak:.1f} GFLOP/s float32 matmul = {achieved / peak:.0%}")


if __name__ == "__main__":
    main()
