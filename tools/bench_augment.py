"""What on-the-fly augmentation costs: per effect, and in training frames per second.

    python tools/bench_augment.py MANIFEST [--config-name synth] [--utterances 300] [--rounds 3]
        [--steps 30] [OVERRIDES ...]

1. CPU milliseconds per training utterance (one thread, as in a loader worker) for reading and
   the features alone, for each effect of the config's ``augment`` group applied to every
   utterance, and for the chain as training draws it (each effect at its probability).
2. Training throughput, asr's own loader (``data.num_workers`` worker processes computing the
   examples; with -1, as training chooses: none on a small CPU, loading in turn with the step and
   keeping the decoded audio in memory as training does, so the first round also reads the files)
   feeding asr's own step on the config's model: the config's augmentation against
   ``augment=default`` (speed perturbation and SpecAugment only), alternating ``--rounds`` times
   ``--steps`` steps each, because this machine's speed drifts; useful frames per second, medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.augment import AugmentConfig  # noqa: E402
from asr.config import load_train_config  # noqa: E402
from asr.data import BucketBatchSampler, ItemKey, SpeechDataset, collate, read_manifest  # noqa: E402
from asr.features import FeatureExtractor  # noqa: E402
from asr.model import AcousticModel  # noqa: E402
from asr.tokenizer import train_tokenizer  # noqa: E402
from asr.devices import grad_scaler  # noqa: E402
from asr.stop import ignore_sigint  # noqa: E402
from asr.train_build import audio_cache_mb, loader_workers  # noqa: E402
from asr.train_step import train_step  # noqa: E402

# every waveform effect the config can draw, each measured alone
EFFECTS = [f.name for f in dataclasses.fields(AugmentConfig) if f.name.endswith("_prob")]


def per_utterance_ms(dataset: SpeechDataset, augment: AugmentConfig | None) -> float:
    """Milliseconds per item of ``dataset`` with ``augment`` (None: reading and features only)."""
    dataset.use_augment(augment)
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[ItemKey(i, 10)]  # an epoch after any augment.warmup_epochs
    return 1000 * (time.perf_counter() - start) / len(dataset)


def effect_costs(dataset: SpeechDataset, augment: AugmentConfig) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    plain = per_utterance_ms(dataset, None)
    print(f"per utterance, one thread ({len(dataset)} utterances): reading + features {plain:.2f} ms")
    none = dataclasses.replace(augment, speed_factors=[], **{name: 0.0 for name in EFFECTS})
    base = per_utterance_ms(dataset, none)  # SpecAugment alone
    for name in ["speed_factors", *EFFECTS]:
        if name == "speed_factors":
            only = dataclasses.replace(none, speed_factors=[f for f in augment.speed_factors if f != 1.0] or [1.0])
        else:
            only = dataclasses.replace(none, **{name: 1.0})
        print(f"  + {name.removesuffix('_prob'):13s} on every utterance: {per_utterance_ms(dataset, only) - base:+.2f} ms")
    print(f"  the chain as drawn in training: {per_utterance_ms(dataset, augment):.2f} ms in all")
    torch.set_num_threads(threads)


def throughput(cfg, dataset: SpeechDataset, vocab: int, augments: dict[str, AugmentConfig], rounds: int,
               steps: int) -> None:
    torch.manual_seed(0)
    model = AcousticModel(cfg.model, dataset.extractor.dim, vocab).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scaler = grad_scaler(torch.device("cpu"), torch.float32)
    sampler = BucketBatchSampler(dataset.num_frames(), cfg.data.max_frames_per_batch, cfg.data.num_buckets, True,
                                 0, cfg.data.length_jitter)
    results: dict[str, list[float]] = {name: [] for name in augments}
    workers = loader_workers(cfg.data.num_workers, torch.device("cpu"))  # -1 (auto): as training would choose
    for r in range(rounds):
        for name, augment in augments.items():
            dataset.use_augment(augment)
            sampler.set_epoch(10 + r)
            loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                prefetch_factor=4 if workers else None, worker_init_fn=ignore_sigint if workers else None)
            batches = iter(loader)
            next(batches)  # the worker is up and ahead
            frames, start = 0, time.perf_counter()
            for _, batch in zip(range(steps), batches):
                train_step(model, model, optimizer, scaler, [batch], torch.float32, cfg.optim.clip_grad_norm)
                frames += batch.num_frames
            results[name].append(frames / (time.perf_counter() - start))
            print(f"  round {r + 1}, {name}: {results[name][-1]:,.0f} frames/s", flush=True)
    medians = {name: statistics.median(v) for name, v in results.items()}
    first, second = list(medians)
    print(f"training, median of {rounds} rounds of {steps} steps: " + ", ".join(f"{n} {v:,.0f} frames/s" for n, v in medians.items())
          + f"; {second} costs {100 * (1 - medians[second] / medians[first]):.0f} % of the throughput")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--config-name", default="synth")
    parser.add_argument("--utterances", type=int, default=300, help="utterances for the per-effect costs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args, overrides = parser.parse_known_args()
    cfg = load_train_config([f"data.train_manifest={args.manifest}", f"data.dev_manifest={args.manifest}", *overrides],
                            args.config_name)
    default = load_train_config([f"data.train_manifest={args.manifest}", f"data.dev_manifest={args.manifest}",
                                 "augment=default"], args.config_name).augment
    utts = read_manifest(args.manifest)
    extractor = FeatureExtractor(cfg.features)
    tokenizer = train_tokenizer(cfg.tokenizer, [u.text for u in utts])
    print(f"command: {' '.join(sys.argv)}")
    effect_costs(SpeechDataset(utts[: args.utterances], extractor, tokenizer), cfg.augment)
    if not args.rounds:
        return
    dataset = SpeechDataset(utts, extractor, tokenizer, audio_cache_mb=audio_cache_mb(cfg.data, torch.device("cpu")))
    throughput(cfg, dataset, tokenizer.vocab_size, {"augment=default": default, "the config's augment": cfg.augment}, args.rounds, args.steps)


if __name__ == "__main__":
    main()
