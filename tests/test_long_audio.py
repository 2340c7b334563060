import pytest

from asr.alignment import WordTiming
from asr.long_audio import stitch, windows
from asr.transcribe import Transcript


def test_windows_tile_the_audio_exactly():
    plan = windows(100.0, 30.0, 4.0)
    assert plan[0][0] == 0.0 and plan[0][2] == 0.0
    for (s1, l1, _, to1), (s2, _, from2, _) in zip(plan, plan[1:]):
        assert to1 == from2 and s2 < s1 + l1  # keep ranges meet; windows overlap
        assert s2 + 2.0 == pytest.approx(from2)  # the border is mid-overlap
    assert plan[-1][0] + plan[-1][1] == pytest.approx(100.0) and plan[-1][3] > 100.0
    assert windows(10.0, 30.0, 4.0) == [(0.0, 10.0, 0.0, 11.0)]


def test_stitching_keeps_each_word_of_the_overlaps_once():
    truth = [WordTiming(f"w{i}", i * 0.7, i * 0.7 + 0.4, 1.0) for i in range(40)]  # 28 s of words
    plan = windows(28.0, 8.0, 2.0)
    pieces = []
    for start, length, keep_from, keep_to in plan:
        seen = tuple(w for w in truth if w.start >= start and w.end <= start + length)  # words fully inside
        pieces.append((Transcript("x", "", length, 0.0, (), seen), keep_from, keep_to))
    assert [w.word for w in stitch(pieces, "x", 28.0).words] == [w.word for w in truth]
