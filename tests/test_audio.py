import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import audio_info, load_audio
from asr.errors import AudioError
from conftest import tone, write_audio

FORMATS = [
    ("wav", {}),
    ("flac", {}),
    ("ogg", {"format": "OGG", "subtype": "VORBIS"}),
    ("mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
    ("sph", {"format": "NIST", "subtype": "PCM_16"}),
]


@pytest.mark.parametrize("ext,kwargs", FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("rate,channels", [(8000, 1), (22050, 2), (44100, 6), (16000, 1)])
def test_any_format_rate_and_channels_become_mono_float32_at_model_rate(tmp_path, ext, kwargs, rate, channels):
    if ext == "mp3":
        channels = min(channels, 2)  # MPEG audio carries at most two channels
    path = write_audio(tmp_path / f"a.{ext}", seconds=1.0, rate=rate, channels=channels, **kwargs)
    waveform = load_audio(path, 16000)
    assert waveform.dtype == torch.float32 and waveform.ndim == 1
    # mp3 encoders pad a few milliseconds; everything else is exact
    assert abs(waveform.shape[0] - 16000) <= (1200 if ext == "mp3" else 1)
    assert 0.05 < waveform.abs().max() <= 1.0


def test_mono_mix_is_the_channel_mean(tmp_path):
    data = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", data, 8000, subtype="FLOAT")
    waveform = load_audio(tmp_path / "s.wav", 8000)
    assert torch.allclose(waveform, torch.full((800,), 0.2))


def test_resampling_keeps_a_tone_at_its_frequency(tmp_path):
    path = write_audio(tmp_path / "t.wav", seconds=1.0, rate=44100)
    waveform = load_audio(path, 16000).numpy()
    spectrum = np.abs(np.fft.rfft(waveform))
    assert abs(np.argmax(spectrum) * 16000 / len(waveform) - 440) < 2


def test_offset_and_duration_read_a_segment(tmp_path):
    ramp = np.linspace(-1, 1, 16000, dtype=np.float32)
    sf.write(tmp_path / "r.wav", ramp, 16000, subtype="FLOAT")
    segment = load_audio(tmp_path / "r.wav", 16000, offset=0.25, duration=0.5)
    assert segment.shape[0] == 8000
    assert torch.allclose(segment, torch.from_numpy(ramp[4000:12000]))
    assert audio_info(tmp_path / "r.wav") == (16000, 1.0)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b""), "cannot read audio"),
        (lambda p: p.write_text("this is not audio\n" * 20), "cannot read audio"),
        (lambda p: sf.write(p, np.zeros((0, 1), dtype=np.float32), 16000), "empty"),
        (lambda p: sf.write(p, np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT"), "NaN"),
    ],
    ids=["missing", "zero-bytes", "text-as-wav", "no-samples", "nan"],
)
def test_bad_audio_raises_one_clear_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as err:
        load_audio(path, 16000)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_offset_past_the_end_is_an_error(tmp_path):
    path = write_audio(tmp_path / "a.wav", seconds=0.5)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, 16000, offset=2.0)


@pytest.mark.parametrize("ext,kwargs", FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("seconds,rate,channels", [(0.5, 8000, 2), (1.25, 22050, 1), (2.0, 44100, 6)])
def test_audio_info_reads_rate_and_duration_from_the_header(tmp_path, ext, kwargs, seconds, rate, channels):
    """What the manifests and the batching rely on: the file's own rate and its duration, for any
    format and channel count (the duration is frames / rate, not samples / rate)."""
    if ext == "mp3":
        channels = min(channels, 2)
    path = write_audio(tmp_path / f"a.{ext}", seconds=seconds, rate=rate, channels=channels, **kwargs)
    info_rate, duration = audio_info(path)
    frames = int(seconds * rate)  # what was written
    assert info_rate == rate
    if ext == "mp3":  # the encoder pads up to a frame or two (1152 samples each) at the ends
        assert frames <= duration * rate <= frames + 3 * 1152
    else:
        assert duration * rate == pytest.approx(frames, abs=1e-6)
    # and it agrees with what load_audio decodes at the file's own rate
    assert load_audio(path, rate).shape[0] == round(duration * rate)


def test_audio_info_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: audio file not found"):
        audio_info(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match="text.wav: cannot read audio"):
        audio_info(tmp_path / "text.wav")
    sf.write(tmp_path / "slow.wav", np.zeros(100, dtype=np.float32), 500)
    with pytest.raises(AudioError, match=r"slow.wav: sample rate 500 Hz is not audio"):
        audio_info(tmp_path / "slow.wav")


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (44101, 16000), (16000, 16000)])
def test_resample_keeps_length_and_frequency(orig, new):
    """asr.audio.resample, the one resampler of every input: the duration is kept, a tone stays at
    its frequency (also for an awkward ratio like 44101/16000), and equal rates leave the samples
    alone."""
    from asr.audio import resample

    waveform = torch.from_numpy(tone(1.0, orig, freq=440.0)[:, 0])
    out = resample(waveform, orig, new)
    if orig == new:
        assert out is waveform
        return
    assert out.dtype == torch.float32 and abs(out.shape[0] - new) <= 1
    spectrum = np.abs(np.fft.rfft(out.numpy()))
    assert abs(np.argmax(spectrum) * new / out.shape[0] - 440) < 2
    # band-limited: the tone keeps its level and nothing else appears
    assert 0.45 < float(out[new // 10: -new // 10].abs().max()) < 0.55
    assert spectrum[np.abs(np.arange(len(spectrum)) * new / out.shape[0] - 440) > 20].max() < 0.02 * spectrum.max()


def test_upsampling_leaves_no_image_above_the_old_band():
    """8 kHz audio upsampled to 16 kHz: a tone at 3.6 kHz, near the old Nyquist, keeps its level
    and leaves no mirror image at 4.4 kHz (a short sinc kernel left one at about -35 dB, which
    per-utterance normalization raises to full scale in the empty 4-8 kHz mel bands)."""
    from asr.audio import resample

    out = resample(torch.from_numpy(tone(1.0, 8000, freq=3600.0)[:, 0]), 8000, 16000).numpy()
    spectrum = np.abs(np.fft.rfft(out[4000:12000] * np.hanning(8000)))
    level_db = 20 * np.log10(spectrum / spectrum.max() + 1e-12)
    bins = np.fft.rfftfreq(8000, 1 / 16000)
    assert bins[np.argmax(spectrum)] == 3600 and 0.45 < np.abs(out[2000:-2000]).max() < 0.55
    assert level_db[np.abs(bins - 4400) < 50].max() < -90
    assert level_db[bins > 4200].max() < -90


def test_audio_too_short_for_the_rate_asked_is_refused_naming_the_file(tmp_path):
    """One sample at 48 kHz is no sample at 16 kHz: an error, not an empty waveform for the
    augmentation or the model to trip on."""
    sf.write(tmp_path / "click.wav", np.array([0.1], dtype=np.float32), 48000)
    with pytest.raises(AudioError, match=r"click.wav: audio too short \(1 samples at 48000 Hz are none at 16000 Hz\)"):
        load_audio(tmp_path / "click.wav", 16000)
    assert load_audio(tmp_path / "click.wav", 48000).numel() == 1
