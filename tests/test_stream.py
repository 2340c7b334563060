"""Streaming: exact incremental front end and resampling, chunked (LC-BLSTM) inference, the
event stream of `asr stream` from a file, stdin and a real PulseAudio device."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import resample_samples
from asr.errors import ConfigError
from asr.features import FeatureConfig, FeatureExtractor, NormMode, StreamingFeatures, sound_span
from asr.chunked import forward_chunk
from asr.model import AcousticModel, ModelConfig
from asr.sources import StreamResampler
from asr.stream import StreamingRecognizer, StreamOptions, stream_events
from asr.transcribe import Recognizer
from tests.conftest import ROOT, default_sigint, run_cli


def random_pieces(signal_: np.ndarray | torch.Tensor, seed: int, largest: int):
    rng = np.random.default_rng(seed)
    start = 0
    while start < len(signal_):
        size = int(rng.integers(1, largest))
        yield signal_[start : start + size]
        start += size


@pytest.mark.parametrize("rate", [8000, 16000])
def test_streaming_features_equal_the_offline_front_end(rate):
    extractor = FeatureExtractor(FeatureConfig(sample_rate=rate, n_mels=40))
    waveform = 0.1 * torch.randn(rate + 1234, generator=torch.Generator().manual_seed(rate))
    streaming = StreamingFeatures(extractor)
    pieces = [streaming.accept(p) for p in random_pieces(waveform, rate, 700)] + [streaming.finish()]
    torch.testing.assert_close(torch.cat(pieces), extractor(waveform), atol=1e-5, rtol=0)


def test_utterance_normalized_streams_give_the_offline_features_for_the_final_pass():
    """With per-utterance normalization the frames as they come use running statistics (blended
    with the training set's at the start), and the whole segment comes out exactly as offline."""
    extractor = FeatureExtractor(FeatureConfig(n_mels=40, normalization="utterance"))
    waveform = 0.1 * torch.randn(16000 + 777, generator=torch.Generator().manual_seed(5))
    offline = extractor(waveform)
    extractor.set_stats(extractor.log_mel(waveform).mean(0), extractor.log_mel(waveform).std(0))  # a good prior
    streaming = StreamingFeatures(extractor)
    running = torch.cat([streaming.accept(p) for p in random_pieces(waveform, 3, 700)] + [streaming.finish()])
    torch.testing.assert_close(streaming.utterance(), offline, atol=1e-4, rtol=0)
    assert running.shape == offline.shape and float((running[:20] - offline[:20]).abs().mean()) < 0.2


@pytest.mark.parametrize("rates", [(48000, 16000), (44100, 16000), (16000, 8000), (8000, 16000)])
def test_block_resampling_equals_resampling_the_whole_signal(rates):
    orig, new = rates
    signal_ = np.random.default_rng(1).standard_normal(orig + 999).astype(np.float32) * 0.1
    resampler = StreamResampler(orig, new)
    pieces = [resampler.accept(p) for p in random_pieces(signal_, 2, 3000)]
    pieces.append(resampler.accept(np.zeros(0, np.float32), final=True))
    expected = resample_samples(signal_, orig, new)
    np.testing.assert_array_equal(np.concatenate(pieces), expected)


def small_model(bidirectional: bool, cell: str = "lstm") -> AcousticModel:
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, hidden_size=32, num_layers=3, norm="layer",
                      projection_size=24)
    return AcousticModel(cfg, 40, 12).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_one_chunk_covering_the_utterance_is_the_offline_forward(cell):
    model = small_model(bidirectional=True, cell=cell)
    features = torch.randn(1, 95, 40)
    with torch.no_grad():
        offline, _ = model(features, torch.tensor([95]))
        frames = model.subsample(features)
        chunked, _ = forward_chunk(model, frames, frames.shape[1])
    torch.testing.assert_close(chunked, offline, atol=1e-5, rtol=0)


def test_forward_state_carrying_equals_a_full_forward_pass():
    model = small_model(bidirectional=False)
    features = torch.randn(1, 120, 40)
    with torch.no_grad():
        offline, _ = model(features, torch.tensor([120]))
        frames, state, outputs = model.subsample(features), None, []
        for piece in frames.split(7, dim=1):
            log_probs, state = forward_chunk(model, piece, piece.shape[1], state)
            outputs.append(log_probs)
    torch.testing.assert_close(torch.cat(outputs, dim=1), offline, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell, chunk, right", [("lstm", 4, 6), ("lstm", 5, 0), ("gru", 3, 2)])
def test_chunk_aware_training_sees_what_streaming_computes(cell, chunk, right):
    """In training, a chunk-aware model's batched outputs equal, per utterance, the committed
    outputs of chunk-by-chunk streaming inference with the same chunk and right context."""
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, hidden_size=16, num_layers=3, norm="layer", projection_size=12, dropout=0.0,
                      train_chunk_frames=chunk, train_right_context_frames=right)
    model = AcousticModel(cfg, 20, 7).train()
    lengths = torch.tensor([61, 40, 9, 3])
    features = torch.randn(4, 61, 20)
    for row, length in enumerate(lengths):
        features[row, length:] = 0.0  # as collate pads
    with torch.no_grad():
        batched, _ = model(features, lengths)
        for row, length in enumerate(lengths.tolist()):
            frames, state, committed = model.subsample(features[row : row + 1, :length]), None, []
            for start in range(0, frames.shape[1], chunk):
                size = min(chunk, frames.shape[1] - start)
                log_probs, state = forward_chunk(model, frames[:, start : start + chunk + right], size, state)
                committed.append(log_probs[:, :size])
            streamed = torch.cat(committed, dim=1)[0]
            torch.testing.assert_close(batched[row, : streamed.shape[0]], streamed, atol=1e-5, rtol=0)


def test_right_context_frames_are_provisional_and_recomputed():
    """With right context, a chunk's outputs differ from offline only through the limited
    look-ahead: as the context grows the chunked outputs approach the offline ones."""
    model = small_model(bidirectional=True)
    features = torch.randn(1, 150, 40)
    with torch.no_grad():
        offline, _ = model(features, torch.tensor([150]))
        frames = model.subsample(features)

        def error(right: int) -> float:
            log_probs, _ = forward_chunk(model, frames[:, : 10 + right], 10)
            return float((log_probs[0, :10] - offline[0, :10]).abs().max())

        assert error(40) < error(2)


@pytest.fixture(scope="module")
def tiny_recognizer(trained_tiny):
    model_path, manifest, rates = trained_tiny
    return Recognizer.load(model_path, "cpu"), model_path, manifest


def yesno_file(manifest) -> tuple[str, str]:
    line = json.loads(open(manifest).readline())
    return line["audio_filepath"], line["text"]


def test_streaming_with_one_chunk_equals_offline_transcription(tiny_recognizer):
    recognizer, _, manifest = tiny_recognizer
    path, _ = yesno_file(manifest)
    whole = StreamOptions(chunk_ms=60_000, endpoint_silence_ms=60_000, max_segment_s=600, final_pass="chunked")
    from asr.sources import file_blocks

    events = list(stream_events(StreamingRecognizer(recognizer, whole), file_blocks(path, recognizer.sample_rate, False)))
    finals = [e for e in events if e.type == "final"]
    assert [e.text for e in finals] == [recognizer.transcribe([path])[0].text]


def test_full_final_pass_of_an_utterance_normalized_model_equals_offline(tiny_recognizer):
    recognizer, _, manifest = tiny_recognizer
    recognizer = Recognizer(recognizer.model, copy.deepcopy(recognizer.extractor), recognizer.tokenizer, "cpu")
    recognizer.extractor.cfg.normalization = NormMode.utterance
    path, _ = yesno_file(manifest)
    # one segment: the whole file, all of it heard by the final pass
    options = StreamOptions(endpoint_silence_ms=60_000, max_segment_s=600, trim_db=0)
    from asr.sources import file_blocks

    events = list(stream_events(StreamingRecognizer(recognizer, options), file_blocks(path, recognizer.sample_rate, False)))
    expected = recognizer.transcribe([path])[0].text
    assert expected and [e.text for e in events if e.type == "final"] == [expected]


def test_sound_span_is_the_stretch_within_the_floor_of_the_loudest():
    rate, hop = 16000, 160
    t = np.arange(rate // 2) / rate
    loud, quiet = 0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * 10 ** (-30 / 20) * np.sin(2 * np.pi * 440 * t[: rate // 5])
    silence = np.zeros(rate // 2)
    waveform = torch.from_numpy(np.concatenate([silence, loud, quiet, silence]).astype(np.float32))
    log_mel = FeatureExtractor(FeatureConfig(normalization=NormMode.none)).log_mel(waveform)
    start, loud_end, quiet_end = len(silence) // hop, (len(silence) + len(loud)) // hop, (len(silence) + len(loud) + len(quiet)) // hop
    wide, narrow = sound_span(log_mel, 35), sound_span(log_mel, 20)
    assert abs(wide.start - start) <= 2 and abs(wide.stop - quiet_end) <= 2  # the tone 30 dB down is kept
    assert abs(narrow.start - start) <= 2 and abs(narrow.stop - loud_end) <= 2  # and cut at a 20 dB floor
    assert sound_span(torch.full((7, 40), -3.0), 35) == slice(0, 7)  # all equally loud: all kept
    assert sound_span(log_mel, 0) == slice(0, log_mel.shape[0])  # 0: no trimming
    assert sound_span(torch.zeros(0, 40), 35) == slice(0, 0)


def test_silence_around_a_segment_leaves_its_final_result_as_it_was(tiny_recognizer, tmp_path):
    """The full final pass hears the segment cut to its sound (trim_db): a second of digital silence
    before and after the same speech (as the endpointer leaves it) gives the same final result."""
    recognizer, _, manifest = tiny_recognizer
    recognizer = Recognizer(recognizer.model, copy.deepcopy(recognizer.extractor), recognizer.tokenizer, "cpu")
    recognizer.extractor.cfg.normalization = NormMode.utterance
    path, _ = yesno_file(manifest)
    speech, rate = sf.read(path, dtype="float32")
    padded = tmp_path / "padded.wav"
    sf.write(padded, np.concatenate([np.zeros(rate, np.float32), speech, np.zeros(rate, np.float32)]), rate)
    options = StreamOptions(endpoint_silence_ms=60_000, max_segment_s=600)
    from asr.sources import file_blocks

    heard: list[int] = []  # output frames of each final pass

    class Listening(StreamingRecognizer):
        def _final_log_probs(self) -> torch.Tensor:
            log_probs = super()._final_log_probs()
            heard.append(log_probs.shape[0])
            return log_probs

    def final(audio: str) -> list[str]:
        events = stream_events(Listening(recognizer, options), file_blocks(audio, recognizer.sample_rate, False))
        return [e.text for e in events if e.type == "final"]

    plain, surrounded = final(path), final(str(padded))
    assert plain and surrounded == plain
    assert len(heard) == 2 and abs(heard[1] - heard[0]) <= 1  # not the 2 s of silence (about 66 frames)


def test_bad_stream_options_name_the_field(tiny_recognizer):
    recognizer = tiny_recognizer[0]
    for options, field in [(StreamOptions(chunk_ms=0), "chunk_ms"), (StreamOptions(right_context_ms=-1), "right_context_ms"),
                           (StreamOptions(final_pass="later"), "final_pass"), (StreamOptions(trim_db=-1), "trim_db"),
                           (StreamOptions(trim_db=float("nan")), "trim_db")]:
        with pytest.raises(ConfigError, match=field):
            StreamingRecognizer(recognizer, options)


def parse_events(stdout: str) -> list[dict]:
    events = [json.loads(line) for line in stdout.splitlines()]
    for event in events:
        assert set(event) == {"type", "text", "start", "end"}
        assert event["type"] in ("partial", "final") and isinstance(event["text"], str)
        assert 0 <= event["start"] <= event["end"]
    return events


def test_json_events_from_a_file_are_well_formed_and_end_final(tiny_recognizer):
    _, model_path, manifest = tiny_recognizer
    path, reference = yesno_file(manifest)
    done = run_cli("stream", str(model_path), "--input", path, "--no-realtime", "--json")
    assert done.returncode == 0, done.stderr
    events = parse_events(done.stdout)
    assert events[-1]["type"] == "final"
    assert any(e["type"] == "partial" for e in events)
    ends = [e["end"] for e in events]
    assert ends == sorted(ends)
    finals = " ".join(e["text"] for e in events if e["type"] == "final").split()
    assert len(finals) == len(reference.split())  # the tiny model knows its training files


def test_file_and_stdin_sources_give_the_same_events(tiny_recognizer, tmp_path):
    _, model_path, manifest = tiny_recognizer
    path, _ = yesno_file(manifest)
    audio, rate = sf.read(path, dtype="int16")
    # stdin PCM at another rate than the model's: resampled on the fly. The file holds the very
    # int16 samples stdin gets, so any difference in the events is the sources', not the input's.
    resampled = resample_samples(audio.astype(np.float32) / 32768, rate, 16000)
    pcm16k = (np.clip(resampled, -1, 1) * 32767).astype("<i2")
    wav16k = tmp_path / "sixteen.wav"
    sf.write(wav16k, pcm16k, 16000, subtype="PCM_16")
    from_file = run_cli("stream", str(model_path), "--input", str(wav16k), "--no-realtime", "--json")
    from_stdin = subprocess.run(
        [sys.executable, "-m", "asr", "stream", str(model_path), "--input", "-", "--rate", "16000", "--json"],
        input=pcm16k.tobytes(), capture_output=True, timeout=300,
    )
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_stdin.stderr
    file_events, stdin_events = parse_events(from_file.stdout), parse_events(from_stdin.stdout.decode())
    assert [e["type"] for e in file_events] == [e["type"] for e in stdin_events]
    assert [e["text"] for e in file_events] == [e["text"] for e in stdin_events]


def test_a_bad_stdin_rate_is_one_line_naming_the_flag(tiny_recognizer):
    done = subprocess.run([sys.executable, "-m", "asr", "stream", str(tiny_recognizer[1]), "--input", "-", "--rate", "0"],
                          input=b"\0\0", capture_output=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.decode().strip().splitlines()[-1] == "asr: error: --rate 0: must be a positive sample rate"


def test_unknown_input_device_is_one_line_listing_the_devices(tiny_recognizer):
    pytest.importorskip("sounddevice", reason="PortAudio (libportaudio2) is not installed")
    done = run_cli("stream", str(tiny_recognizer[1]), "--input-device", "no-such-device")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "input device 'no-such-device' not found" in done.stderr
    assert "--input-device" not in done.stderr  # no deprecation warning for the new spelling


def test_old_spelling_of_the_microphone_option_still_works_with_a_warning(tiny_recognizer):
    """``asr stream --device NAME`` meant the microphone in asr 0.1: still read as --input-device
    for one release, with a warning; a compute device after --device is the compute device."""
    pytest.importorskip("sounddevice", reason="PortAudio (libportaudio2) is not installed")
    done = run_cli("stream", str(tiny_recognizer[1]), "--device", "no-such-device")
    assert "the microphone is now --input-device" in done.stderr
    assert "input device 'no-such-device' not found" in done.stderr  # it was taken as the microphone
    done = run_cli("stream", str(tiny_recognizer[1]), "--device", "cuda:7", "--input", "-")
    assert done.returncode != 0 and "--input-device" not in done.stderr  # taken as the compute device


@pytest.fixture
def pulseaudio():
    """A PulseAudio server with a null sink whose monitor is the default source: what `paplay`
    plays into the sink, PortAudio records from the monitor."""
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio pulseaudio-utils)")
    started = subprocess.run(["pulseaudio", "--check"]).returncode != 0
    if started and subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1"],
                                  capture_output=True).returncode != 0:
        pytest.skip("PulseAudio cannot start here")
    # a freshly started server answers before it has loaded its null sink: wait for the monitor
    for _ in range(100):
        if subprocess.run(["pactl", "set-default-source", "auto_null.monitor"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.skip("PulseAudio has no null sink monitor")
    yield
    if started:
        subprocess.run(["pulseaudio", "--kill"], capture_output=True)
        for _ in range(100):  # gone before the next test looks for a server
            if subprocess.run(["pulseaudio", "--check"]).returncode != 0:
                break
            time.sleep(0.05)


def test_microphone_stream_through_a_real_pulseaudio_device(tiny_recognizer, pulseaudio):
    _, model_path, manifest = tiny_recognizer
    path, reference = yesno_file(manifest)
    listener = subprocess.Popen(
        [sys.executable, "-m", "asr", "stream", str(model_path), "--input-device", "pulse", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.time() + 120
        while "listening on" not in listener.stderr.readline():  # the model is loaded, the device open
            assert listener.poll() is None and time.time() < deadline, "asr stream did not start"
        subprocess.run(["paplay", path], check=True, timeout=60)
        time.sleep(1.0)
    finally:
        listener.send_signal(signal.SIGINT)  # Ctrl-C: the last words are committed, exit 0
        out, err = listener.communicate(timeout=60)
    assert listener.returncode == 0, err
    heard = " ".join(e["text"] for e in parse_events(out) if e["type"] == "final").split()
    expected = reference.split()
    assert len(heard) == len(expected)
    assert sum(h == e for h, e in zip(heard, expected)) >= len(expected) - 1


def test_the_live_check_plays_people_through_the_virtual_microphone_and_scores_them(tiny_recognizer, pulseaudio,
                                                                                     fsdd_dir):
    """tools/live_check.py end to end: FSDD strings through PulseAudio into asr stream, then the
    WER table (the yes/no model cannot recognize digits: what is checked is the path and the report)."""
    _, model_path, _ = tiny_recognizer
    done = subprocess.run([sys.executable, "tools/live_check.py", str(model_path), "--fsdd", str(fsdd_dir),
                           "--strings", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    truth = next(line for line in lines if line.startswith("truth:")).split()[1:]
    assert 6 <= len(truth) <= 10 and set(truth) <= set("zero one two three four five six seven eight nine".split())
    for row in ("microphone finals vs truth", "offline (asr transcribe) vs truth",
                "file stream (asr stream --input) vs truth", "microphone finals vs offline"):
        assert any(line.startswith(row) and " WER " in f" {line} " for line in lines), (row, done.stdout)
    assert subprocess.run(["pulseaudio", "--check"]).returncode == 0  # a server it did not start is left running


def test_a_chunk_aware_model_streams_with_its_training_chunks():
    from asr.stream import model_stream_options
    from asr.tokenizer import CharTokenizer, TextNormalization

    tokenizer = CharTokenizer(sorted("ab "), TextNormalization())
    cfg = ModelConfig(hidden_size=8, num_layers=1, train_chunk_frames=5, train_right_context_frames=7)
    recognizer = Recognizer(AcousticModel(cfg, 80, tokenizer.vocab_size), FeatureExtractor(FeatureConfig()), tokenizer,
                            "cpu")
    options = model_stream_options(recognizer)  # 30 ms output frames: 3 stacked 10 ms frames
    assert (options.chunk_ms, options.right_context_ms) == pytest.approx((150.0, 210.0))
    assert model_stream_options(recognizer, chunk_ms=90.0).chunk_ms == 90.0


# ---- endpointing, and the microphone against the file ------------------------------------------


def two_utterances(manifest, tmp_path, gap: float = 1.5) -> tuple[str, list[tuple[str, float, float]]]:
    """Two real recordings (the tiny model's training files 1 and 5, whose texts differ in four
    words), each cut to its speech plus 0.3 s, with ``gap`` seconds of quiet room noise (-60 dB)
    between them, 0.5 s before and 1 s after, written as 16-bit WAV at their own rate; returns the
    path and each utterance's (text, speech start, speech end) in seconds. Speech is where the
    10 ms energy is above -35 dB (the recordings' noise floor is near -52 dB, words reach -16 dB)."""
    lines = [json.loads(line) for line in open(manifest)]
    rng = np.random.default_rng(0)
    pieces, spans, position = [], [], 0.0
    rate = None

    def quiet(seconds: float) -> np.ndarray:
        return (0.001 * rng.standard_normal(int(seconds * rate))).astype(np.float32)

    for index in (1, 5):
        audio, rate = sf.read(lines[index]["audio_filepath"], dtype="float32")
        block = rate // 100
        energy = 10 * np.log10((audio[: len(audio) // block * block].reshape(-1, block) ** 2).mean(1) + 1e-10)
        loud = np.flatnonzero(energy > -35)
        start, end = loud[0] * block, (loud[-1] + 1) * block
        pad = int(0.3 * rate)
        lead = quiet(0.5 if index == 1 else gap)
        speech = audio[max(0, start - pad) : end + pad]
        pieces += [lead, speech]
        position += len(lead) / rate
        onset = min(pad, start) / rate  # where the speech begins in the cut
        spans.append((lines[index]["text"], position + onset, position + onset + (end - start) / rate))
        position += len(speech) / rate
    pieces.append(quiet(1.0))
    path = tmp_path / "two_utterances.wav"
    sf.write(path, np.concatenate(pieces), rate, subtype="PCM_16")
    return str(path), spans


def test_a_pause_ends_a_streaming_segment_with_a_final_result(tiny_recognizer, tmp_path):
    """Two utterances 2.1 s apart (1.5 s gap + the 0.3 s margins): with --endpoint-silence-ms 500
    the pause ends the first segment (its final comes before the second utterance starts) and a
    new one begins; each final has its own utterance's words and spans that speech. A pause
    shorter than the endpoint silence ends nothing: one final with all the words."""
    from asr.scoring import score

    _, model_path, manifest = tiny_recognizer
    path, spans = two_utterances(manifest, tmp_path)
    (text_a, start_a, end_a), (text_b, start_b, end_b) = spans
    total = sf.info(path).duration
    stream = ("stream", str(model_path), "--input", path, "--no-realtime", "--json")
    done = run_cli(*stream, "--endpoint-silence-ms", "500")
    assert done.returncode == 0, done.stderr
    events = parse_events(done.stdout)
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 2, finals
    first, second = finals
    # each final is its own utterance's words (the two differ in 4 of 8; the tiny model may slip one)
    assert score([text_a], [first["text"]]).wer <= 12.5 and score([text_b], [second["text"]]).wer <= 12.5, finals
    # the first: from before its speech to 0.5 s of non-speech after it (+ the VAD's hang-over on
    # the word's fading end), and emitted before the second utterance began
    assert first["start"] <= start_a and end_a + 0.5 - 0.03 <= first["end"] <= end_a + 1.0, (first, spans)
    assert first["end"] < start_b
    assert all(e["end"] < start_b for e in events[: events.index(first)])
    # the second: a new segment, starting after the first ended and before its own speech
    assert first["end"] <= second["start"] <= start_b and end_b + 0.5 - 0.03 <= second["end"] <= end_b + 1.0, (
        second, spans)
    assert any(e["type"] == "partial" and first["end"] <= e["start"] for e in events)  # partials of the new segment

    done = run_cli(*stream, "--endpoint-silence-ms", "3000")
    assert done.returncode == 0, done.stderr
    finals = [e for e in parse_events(done.stdout) if e["type"] == "final"]
    assert len(finals) == 1 and finals[0]["start"] <= start_a and finals[0]["end"] == pytest.approx(total, abs=0.03)
    # all the words, in order (by characters: across a long pause the tiny model, trained on pauses
    # of a fraction of a second, may give no space between the two utterances' words)
    assert score([f"{text_a} {text_b}"], [finals[0]["text"]]).cer <= 5.0, finals


class null_sink:
    """A PulseAudio null sink of its own at ``rate`` Hz mono, for one test: what paplay plays into
    it reaches a recorder of its monitor sample for sample (no resampling, unity volume). Only
    the processes given ``env`` (PULSE_SOURCE) record from it; the server's default is untouched."""

    def __init__(self, rate: int):
        self.name, self.rate = f"asr_test_{os.getpid()}", rate

    def __enter__(self) -> null_sink:
        loaded = subprocess.run(["pactl", "load-module", "module-null-sink", f"sink_name={self.name}",
                                 f"rate={self.rate}", "channels=1", "format=s16le"], capture_output=True, text=True)
        assert loaded.returncode == 0, loaded.stderr
        self.module = loaded.stdout.strip()
        self.env = {**os.environ, "PULSE_SOURCE": f"{self.name}.monitor", "PYTHONUNBUFFERED": "1"}
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["pactl", "unload-module", self.module], capture_output=True)


def test_the_microphone_and_the_same_file_give_the_same_finals(tiny_recognizer, pulseaudio, tmp_path):
    """`asr stream --input-device pulse` hearing the file played by paplay through a virtual microphone
    gives the finals of `asr stream --input FILE`: the same segments with the same words. Times
    are not compared (the recording starts whenever the device delivers); the texts may differ
    by one word at most, since the device may drop the first block, which moves the 30 ms
    voice-activity grid against the speech."""
    from queue import Empty, Queue
    from threading import Thread

    from asr.scoring import score

    recognizer, model_path, manifest = tiny_recognizer
    path, spans = two_utterances(manifest, tmp_path)
    from_file = run_cli("stream", str(model_path), "--input", path, "--no-realtime", "--json")
    assert from_file.returncode == 0, from_file.stderr
    file_finals = [e["text"] for e in parse_events(from_file.stdout) if e["type"] == "final"]
    assert len(file_finals) == 2, file_finals
    assert all(score([text], [final]).wer <= 12.5 for (text, _, _), final in zip(spans, file_finals)), file_finals

    with null_sink(recognizer.sample_rate) as sink:
        listener = subprocess.Popen(
            [sys.executable, "-m", "asr", "stream", str(model_path), "--input-device", "pulse", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=sink.env,
            preexec_fn=default_sigint,
        )
        lines: Queue = Queue()
        reader = Thread(target=lambda: [lines.put(line) for line in listener.stdout], daemon=True)
        heard: list[str] = []
        try:
            deadline = time.time() + 120
            while "listening on" not in listener.stderr.readline():  # the model is loaded, the device open
                assert listener.poll() is None and time.time() < deadline, "asr stream did not start"
            reader.start()
            subprocess.run(["paplay", f"--device={sink.name}", path], check=True, timeout=60)
            # the file ends in 1 s of quiet: both segments end by their pause, not by Ctrl-C; wait
            # for the finals themselves (the time limit only stops a broken run from hanging)
            finals = 0
            while finals < len(file_finals):
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.time()))
                except Empty:
                    pytest.fail(f"asr stream gave {finals} of {len(file_finals)} finals: {heard}")
                heard.append(line)
                finals += json.loads(line)["type"] == "final"
        finally:
            listener.send_signal(signal.SIGINT)
            listener.wait(timeout=60)
            reader.join(timeout=60) if reader.is_alive() else None
        err = listener.stderr.read()
    while not lines.empty():
        heard.append(lines.get())
    assert listener.returncode == 0, err
    mic_finals = [e["text"] for e in parse_events("".join(heard)) if e["type"] == "final"]
    assert len(mic_finals) == len(file_finals), (mic_finals, file_finals)
    for mic, file in zip(mic_finals, file_finals):
        assert score([file], [mic]).wer <= 12.5, (mic_finals, file_finals)
