"""Word timestamps, subtitles and the other output formats."""

from __future__ import annotations

import json
import re

import pytest
import torch

from asr.alignment import WordTiming, refine_edges, word_timings
from asr.audio import block_energy_db
from asr.outputs import OutputFormat, output_paths, render, segment_words, timestamp
from asr.tokenizer import CharTokenizer, TextNormalization
from asr.transcribe import Recognizer, Transcript
from conftest import run_cli

SRT_CUE = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)$")
VTT_CUE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)$")


def seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_word_times_follow_the_frames_and_the_subsampling():
    tokenizer = CharTokenizer(sorted("ab "), TextNormalization())
    a, b, space = (tokenizer.index[c] for c in "ab ")
    path = [0, a, a, 0, 0, space, 0, b, 0, 0]  # "a" at frames 1-2, "b" at frame 7
    log_probs = torch.full((len(path), tokenizer.vocab_size), -20.0)
    for t, token in enumerate(path):
        log_probs[t, token] = 0.0
    words = word_timings(log_probs.log_softmax(-1), (a, space, b), tokenizer, seconds_per_frame=0.04, offset=1.0)
    assert [w.word for w in words] == ["a", "b"]
    assert words[0].start == pytest.approx(1.04) and words[0].end == pytest.approx(1.12)
    assert words[1].start == pytest.approx(1.28) and words[1].end == pytest.approx(1.32)
    assert all(w.confidence > 0.99 for w in words)


def test_word_edges_move_to_the_speech_around_each_anchor():
    """Three bursts of noise: two apart, two touching with a dip between. Each word's anchor is a
    short span inside its burst (where a peaky CTC model fires); the edges must land on the
    bursts' edges, and the touching pair must split at the dip."""
    rate, block = 8000, 80  # 10 ms blocks
    generator = torch.Generator().manual_seed(0)
    waveform = 1e-4 * torch.randn(2 * rate, generator=generator)  # quiet room noise
    for start, end, level in [(0.20, 0.50, 0.5), (0.70, 1.00, 0.5), (1.00, 1.30, 0.3)]:
        waveform[int(start * rate): int(end * rate)] += level * torch.randn(int((end - start) * rate), generator=generator)
    waveform[int(0.98 * rate): int(1.02 * rate)] *= 0.1  # the dip where the touching words meet
    anchors = [(45, 47), (72, 74), (125, 127)]
    edges = refine_edges(anchors, block_energy_db(waveform, block), max_shift=100)
    expected = [(20, 50), (70, 100), (100, 130)]
    for (start, end), (true_start, true_end) in zip(edges, expected):
        assert abs(start - true_start) <= 2 and abs(end - true_end) <= 2, edges
    assert edges[1][1] == edges[2][0]  # touching words share their border
    # an edge never moves further than allowed from its anchor
    assert refine_edges(anchors, block_energy_db(waveform, block), max_shift=5)[0] == (40, 50)


def test_a_spike_in_the_pause_after_its_word_is_moved_onto_the_word():
    """Two words as bursts; the second word's CTC anchor fired 80 ms after its burst ended, in
    the pause (a model on an unheard voice does this): its edges must still be the burst's."""
    rate, block = 8000, 80
    generator = torch.Generator().manual_seed(1)
    waveform = 1e-4 * torch.randn(2 * rate, generator=generator)
    for start, end in [(0.20, 0.50), (0.80, 1.10)]:
        waveform[int(start * rate): int(end * rate)] += 0.5 * torch.randn(int((end - start) * rate), generator=generator)
    energy = block_energy_db(waveform, block)
    edges = refine_edges([(30, 32), (118, 119)], energy, max_shift=100)
    assert [(abs(a - ta) <= 2 and abs(b - tb) <= 2) for (a, b), (ta, tb) in zip(edges, [(20, 50), (80, 110)])] == [True, True], edges
    # a spike before its word's speech (nearer to the next word's) moves forward onto it
    edges = refine_edges([(30, 32), (70, 71)], energy, max_shift=100)
    assert abs(edges[1][0] - 80) <= 2 and abs(edges[1][1] - 110) <= 2, edges
    # never past a neighbour: the first word keeps its own burst
    assert abs(edges[0][0] - 20) <= 2 and abs(edges[0][1] - 50) <= 2, edges


def test_a_word_whose_first_letter_fired_early_starts_at_its_own_speech():
    """Three words as bursts between pauses. The second word's anchor began inside the first
    burst, the third's in the pause before its burst (a model on an unheard voice fires a word's
    first letter early): each word must get its own burst's edges."""
    rate, block = 8000, 80
    generator = torch.Generator().manual_seed(2)
    waveform = 1e-5 * torch.randn(2 * rate, generator=generator)
    for start, end in [(0.20, 0.50), (0.70, 0.95), (1.30, 1.60)]:
        waveform[int(start * rate): int(end * rate)] += 0.5 * torch.randn(int((end - start) * rate), generator=generator)
    anchors = [(25, 35), (45, 90), (110, 150)]
    edges = refine_edges(anchors, block_energy_db(waveform, block), max_shift=100)
    truth = [(20, 50), (70, 95), (130, 160)]
    assert all(abs(a - ta) <= 2 and abs(b - tb) <= 2 for (a, b), (ta, tb) in zip(edges, truth)), edges
    # a quiet stretch after a pause (a breath, 30 dB below the words) is not the word's own speech
    waveform[int(0.70 * rate): int(0.95 * rate)] *= 10 ** (-30 / 20)
    edges = refine_edges(anchors, block_energy_db(waveform, block), max_shift=100)
    assert edges[1][0] < 50, edges


def cues(segments) -> list[tuple[float, float, str]]:
    return [(s.start, s.end, s.text) for s in segments]


def timed(*spans: tuple[str, float, float]) -> list[WordTiming]:
    return [WordTiming(word, start, end, 1.0) for word, start, end in spans]


# times below are multiples of 0.25 s (exact in binary), so "exactly at the limit" is exact


def test_cues_break_at_a_pause_longer_than_max_gap():
    words = timed(("one", 0.0, 0.5), ("two", 0.75, 1.0), ("three", 1.5, 1.75),  # gaps 0.25 and exactly 0.5
                  ("four", 2.5, 3.0), ("five", 3.25, 3.5))  # a 0.75 s pause before "four"
    segments = segment_words(words, max_gap=0.5, max_chars=1000, max_seconds=1000)
    assert cues(segments) == [(0.0, 1.75, "one two three"), (2.5, 3.5, "four five")]
    assert [len(s.words) for s in segments] == [3, 2] and segments[1].words[0] is words[3]
    # a pause that is not longer than max_gap never breaks
    longer = segment_words(words, max_gap=0.75, max_chars=1000, max_seconds=1000)
    assert cues(longer) == [(0.0, 3.5, "one two three four five")]


def test_cues_break_before_the_word_that_would_pass_max_chars():
    words = timed(("aaa", 0.0, 0.25), ("bbb", 0.25, 0.5), ("cc", 0.5, 0.75), ("dddd", 0.75, 1.0), ("e", 1.0, 1.25),
                  ("abcdefghijkl", 1.25, 1.5), ("f", 1.5, 1.75))
    segments = segment_words(words, max_gap=10, max_chars=10, max_seconds=1000)
    # "aaa bbb cc" is exactly 10 characters; "+ dddd" would be 15. A word longer than the limit
    # gets a cue of its own, whole
    assert cues(segments) == [(0.0, 0.75, "aaa bbb cc"), (0.75, 1.25, "dddd e"), (1.25, 1.5, "abcdefghijkl"),
                              (1.5, 1.75, "f")]
    assert all(len(s.text) <= 10 for s in segments if len(s.words) > 1)


def test_cues_break_before_the_word_that_would_pass_max_seconds():
    words = timed(*[(f"w{i}", 0.75 * i, 0.75 * i + 0.5) for i in range(7)])  # 0.5 s words, 0.25 s apart
    segments = segment_words(words, max_gap=10, max_chars=1000, max_seconds=2.0)
    # w0..w2 span exactly 2.0 s; w3 would make it 2.75 s: a new cue starts at w3
    assert cues(segments) == [(0.0, 2.0, "w0 w1 w2"), (2.25, 4.25, "w3 w4 w5"), (4.5, 5.0, "w6")]
    assert cues(segment_words(words, max_gap=10, max_chars=1000, max_seconds=1.0)) == [
        (0.75 * i, 0.75 * i + 0.5, f"w{i}") for i in range(7)]  # no two words fit in 1 s


def test_subtitle_cues_use_the_default_limits():
    """The srt writer's cues: a pause over 0.8 s, 42 characters and 6 s each end a cue."""
    pause = timed(("hello", 0.0, 0.5), ("there", 0.75, 1.25), ("again", 2.25, 2.5))  # 1.0 s pause
    long_line = timed(*[(f"word{i:02d}", 3.0 + 0.5 * i, 3.25 + 0.5 * i) for i in range(7)])  # 0.25 s gaps
    slow = timed(*[(f"s{i}", 7.0 + 1.0 * i, 7.75 + 1.0 * i) for i in range(8)])  # 0.25 s gaps, short text
    t = Transcript("x.wav", "", 15.0, 0.0, (), tuple(pause + long_line + slow))
    got = [SRT_CUE.match(cue).groups()[1:] for cue in render(t, OutputFormat.srt).strip().split("\n\n")]
    assert got == [
        ("00:00:00,000", "00:00:01,250", "hello there"),
        ("00:00:02,250", "00:00:05,250", "again word00 word01 word02 word03 word04"),  # 40 characters; +7 > 42
        ("00:00:05,500", "00:00:10,750", "word05 word06 s0 s1 s2 s3"),  # 5.25 s; s4 would end it at 6.25 s
        ("00:00:11,000", "00:00:14,750", "s4 s5 s6 s7"),
    ]
    assert timestamp(3725.5, ",") == "01:02:05,500"


def test_srt_vtt_tsv_are_well_formed():
    words = tuple(WordTiming(w, i * 0.5, i * 0.5 + 0.3, 0.9) for i, w in enumerate("a b c d".split()))
    t = Transcript("x.wav", "a b c d", 2.0, -1.0, (), words)
    srt_cues = render(t, OutputFormat.srt).strip().split("\n\n")
    for number, cue in enumerate(srt_cues, 1):
        m = SRT_CUE.match(cue)
        assert m and int(m.group(1)) == number and seconds(m.group(2)) < seconds(m.group(3))
    vtt = render(t, OutputFormat.vtt)
    assert vtt.startswith("WEBVTT\n\n")
    assert all(VTT_CUE.match(cue) for cue in vtt[len("WEBVTT\n\n"):].strip().split("\n\n"))
    tsv = render(t, OutputFormat.tsv).splitlines()
    assert tsv[0] == "start\tend\ttext" and tsv[1] == "0\t1800\ta b c d"
    record = json.loads(render(t, OutputFormat.json))
    assert [w["word"] for s in record["segments"] for w in s["words"]] == ["a", "b", "c", "d"]


def test_output_names_never_collide(tmp_path):
    keys = ["a/x.wav", "b/x.wav", "c/y.flac"]
    assert [p.name for p in output_paths(keys, tmp_path, OutputFormat.srt)] == ["a_x.srt", "b_x.srt", "y.srt"]


@pytest.mark.parametrize("speech_edges", [False, True])
def test_real_timestamps_are_monotonic_and_inside_the_audio(trained_tiny, speech_edges):
    model_path, manifest, _ = trained_tiny
    recognizer = Recognizer.load(model_path, "cpu")
    from asr.data import read_manifest

    utts = read_manifest(manifest)[:4]
    for utt, t in zip(utts, recognizer.transcribe(utts, timestamps=True, speech_edges=speech_edges)):
        assert " ".join(w.word for w in t.words) == t.text
        ends = [0.0] + [x for w in t.words for x in (w.start, w.end)]
        assert ends == sorted(ends) and ends[-1] <= utt.duration + 1e-6
        assert all(0.0 <= w.confidence <= 1.0 for w in t.words)


def test_cli_writes_one_subtitle_file_per_input(trained_tiny, tmp_path):
    model_path, manifest, _ = trained_tiny
    out = tmp_path / "subs"
    result = run_cli("transcribe", str(model_path), str(manifest), "--format", "srt", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert len(files) == len(manifest.read_text().splitlines())
    assert all(SRT_CUE.match(f.read_text().strip().split("\n\n")[0]) for f in files)
    bad = run_cli("transcribe", str(model_path), str(manifest), "--format", "srt")
    assert bad.returncode == 2 and "needs --output-dir" in bad.stderr


def test_long_audio_in_windows_matches_one_pass(trained_tiny, tmp_path):
    """Six real recordings joined into one ~36 s file: overlapping windows read from the file give
    the words of a single pass over the whole file, with increasing times."""
    import numpy as np
    import soundfile as sf

    from asr.data import Utterance, read_manifest

    model_path, manifest, _ = trained_tiny
    recognizer = Recognizer.load(model_path, "cpu")
    utts = read_manifest(manifest)[:6]
    pieces = [sf.read(u.audio_filepath, dtype="float32")[0] for u in utts]
    rate = sf.info(utts[0].audio_filepath).samplerate
    joined = tmp_path / "long.wav"
    sf.write(joined, np.concatenate(pieces), rate)
    duration = sum(len(p) for p in pieces) / rate
    whole = recognizer.transcribe([Utterance(joined, duration, "")])[0]
    long = dict(recognizer.recognize([Utterance(joined, duration, "")], long_audio=10.0, window=12.0, overlap=4.0))[0]
    # the same words as one pass, but for a character or two at a window edge: the tiny test model
    # is weak enough that 4 s less left context can split a word ("no" -> "n o")
    from asr.scoring import score

    assert score([whole.text], [long.text]).wer <= 5.0 and len(long.words) > 30
    starts = [w.start for w in long.words]
    assert starts == sorted(starts) and long.words[-1].end <= duration + 1e-6
