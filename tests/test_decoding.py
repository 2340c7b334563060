import math

import torch

from asr.decoding import greedy_decode
from asr.scoring import score


def one_hot_log_probs(paths, vocab=4):
    frames = max(len(p) for p in paths)
    lp = torch.full((len(paths), frames, vocab), math.log(1e-4))
    for b, path in enumerate(paths):
        for t, token in enumerate(path):
            lp[b, t, token] = math.log(0.9)
    return lp


def test_greedy_merges_repeats_removes_blanks_and_respects_lengths():
    paths = [[0, 1, 1, 0, 1, 2, 2, 0], [3, 3, 3, 0, 0, 0, 2, 2], [1, 0, 2, 3]]
    lp = one_hot_log_probs(paths)
    hyps = greedy_decode(lp, torch.tensor([8, 6, 4]))
    assert hyps[0].tokens == (1, 1, 2) and hyps[0].frames == (1, 4, 5)
    assert hyps[1].tokens == (3,)  # frames 6-7 are past its length
    assert hyps[2].tokens == (1, 2, 3) and hyps[2].frames == (0, 2, 3)
    assert math.isclose(hyps[2].score, 4 * math.log(0.9), rel_tol=1e-5)


def test_greedy_agrees_batched_and_per_item():
    lp = torch.randn(5, 30, 6, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    lengths = torch.tensor([30, 12, 1, 25, 7])
    batched = greedy_decode(lp, lengths)
    for i in range(5):
        single = greedy_decode(lp[i : i + 1, : lengths[i]], lengths[i : i + 1])[0]
        assert (single.tokens, single.frames) == (batched[i].tokens, batched[i].frames)
        assert math.isclose(single.score, batched[i].score, rel_tol=1e-6)


def test_empty_output():
    assert greedy_decode(one_hot_log_probs([[0, 0, 0]]), torch.tensor([3]))[0].tokens == ()


def test_wer_and_cer_on_known_pairs():
    rates = score(["the cat sat", "hello world", "a"], ["the cat sat", "hello word there", ""])
    # words: 0 + (1 sub + 1 ins) + 1 del = 3 errors over 3 + 2 + 1 = 6 words
    assert math.isclose(rates.wer, 50.0)
    # chars: 0 + ("hello world" -> "hello word there": 1 del + 6 ins = 7) + 1 = 8 over 11 + 11 + 1
    assert math.isclose(rates.cer, 100 * 8 / 23)
    assert rates.summary() == f"WER 50.00 CER {100 * 8 / 23:.2f}"


def test_error_report_lists_worst_first(tmp_path):
    import json

    rates = score(["a b", "c d"], ["a b", "x y"])
    lines = [json.loads(l) for l in rates.write_report(tmp_path / "r.jsonl").read_text().splitlines()]
    assert lines[0]["reference"] == "c d" and lines[0]["word_errors"] == 2 and lines[1]["word_errors"] == 0
