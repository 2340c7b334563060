"""Each augmentation does what it says on a real signal, and a chain is reproducible from its seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr import fft
from asr.audio import load_audio
from asr.augment import (
    AudioFolder, AugmentConfig, WaveformAugmenter, add_noise, band_limit, coloured_noise, equalize, fast_fft_length,
    join_with_pause, reverberate, simulated_rir, spec_augment, speed_perturb, trim_to_loudness, warp_filters,
)
from asr.errors import ConfigError
from asr.features import FeatureConfig, FeatureExtractor
from conftest import YESNO, speak, tone

RATE = 16000


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> torch.Tensor:
    """A real recording where there is one (yes/no, 8 kHz, resampled), else espeak-ng."""
    files = sorted(YESNO.glob("*.wav"))
    if files:
        return load_audio(files[0], RATE)
    return load_audio(speak("call mary at five thirty", tmp_path_factory.mktemp("speech") / "a.wav"), RATE)


def power_db(x: torch.Tensor) -> float:
    return 10 * math.log10(float(x.pow(2).mean()))


def band_energy(x: torch.Tensor, low: float, high: float) -> float:
    spectrum = torch.fft.rfft(x).abs().pow(2)
    f = torch.fft.rfftfreq(x.numel(), 1 / RATE)
    return float(spectrum[(f >= low) & (f < high)].sum())


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_is_added_at_the_asked_snr(speech, exponent, snr):
    noise = coloured_noise(speech.numel() // 3, exponent, torch.Generator().manual_seed(1))  # looped to length
    noisy = add_noise(speech, noise, snr)
    measured = power_db(speech) - power_db(noisy - speech)
    assert abs(measured - snr) < 0.5


def test_coloured_noise_slopes_like_its_exponent():
    g = torch.Generator().manual_seed(0)
    white, brown = coloured_noise(RATE * 4, 0.0, g), coloured_noise(RATE * 4, 2.0, g)
    ratio = lambda x: band_energy(x, 100, 400) / band_energy(x, 3200, 6400)  # noqa: E731  equal-width octaves apart
    assert 0.05 < ratio(white) < 0.2  # white: energy per Hz is flat
    assert ratio(brown) > 50 * ratio(white)  # brown: 1/f^2 puts it at the low end


def test_simulated_room_decays_by_60_db_in_its_rt60():
    rt60 = 0.5
    rir = simulated_rir(RATE, rt60, drr_db=0.0, generator=torch.Generator().manual_seed(2))
    tail = rir[int(0.02 * RATE) :]
    schroeder = tail.flip(0).pow(2).cumsum(0).flip(0)  # energy still to come, after each sample
    decay_db = 10 * torch.log10(schroeder / schroeder[0])
    t = torch.arange(tail.numel()) / RATE
    slope = np.polyfit(t[: int(0.3 * RATE)].numpy(), decay_db[: int(0.3 * RATE)].numpy(), 1)[0]  # dB per second
    assert -60 / rt60 * 1.25 < slope < -60 / rt60 * 0.8


def test_reverberation_adds_a_decaying_tail_after_the_speech(speech):
    loudest = int(speech.pow(2).unfold(0, 1600, 160).mean(1).argmax()) * 160 + 1600
    speech = speech[:loudest]  # the speaker stops in the middle of a loud sound
    dry = torch.cat([speech, torch.zeros(RATE // 2)])
    wet = reverberate(dry, simulated_rir(RATE, 0.6, drr_db=0.0, generator=torch.Generator().manual_seed(3)))
    assert wet.shape == dry.shape and abs(power_db(wet) - power_db(dry)) < 0.01
    after = wet[speech.numel() :]
    windows = [power_db(after[i : i + 1600]) for i in range(0, 6400, 1600)]  # 100 ms each
    assert windows[0] > power_db(wet) - 30  # the room rings on after the speaker stops
    assert all(a > b for a, b in zip(windows, windows[1:]))  # ... and dies away
    assert float(dry[speech.numel() :].abs().max()) == 0


@pytest.mark.parametrize("length,n", [(28000, 28125), (16001, 16001), (5000, 4096)])
def test_the_augmentation_ffts_agree_with_torch_fft(length, n):
    x = torch.randn(length, generator=torch.Generator().manual_seed(5))
    spectrum = fft.rfft(x, n)  # zero-padded, or cut, to n as torch.fft pads or cuts
    assert spectrum.dtype == torch.complex64
    torch.testing.assert_close(spectrum, torch.fft.rfft(x, n=n), rtol=1e-4, atol=1e-3)
    back = fft.irfft(spectrum, n)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, torch.fft.irfft(torch.fft.rfft(x, n=n), n=n), rtol=1e-4, atol=1e-5)


def test_reverberation_is_torchaudios_convolution_aligned_at_the_direct_sound(speech):
    rir = simulated_rir(RATE, 0.4, drr_db=3.0, generator=torch.Generator().manual_seed(6))
    peak = int(rir.abs().argmax())
    full = AF.fftconvolve(speech, rir)[peak : peak + speech.numel()]
    torch.testing.assert_close(reverberate(speech, rir), full * speech.norm() / full.norm(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("low,high", [(300.0, 3400.0), (0.0, 4000.0)])
def test_band_limiting_removes_the_energy_outside_the_band(speech, low, high):
    noisy = add_noise(speech, coloured_noise(speech.numel(), 0.0, torch.Generator().manual_seed(4)), 10.0)
    out = band_limit(noisy, RATE, low, high)
    # at least 40 dB off what the input had outside the band (a measure of the filter, not of
    # how much of the signal lay there: espeak-ng's voice has far more below 300 Hz than yes/no's)
    assert band_energy(out, 1.1 * high, RATE / 2) < 1e-4 * band_energy(noisy, 1.1 * high, RATE / 2)
    if low:
        assert band_energy(out, 0, 0.9 * low) < 1e-4 * band_energy(noisy, 0, 0.9 * low)
    inside = band_energy(noisy, 1.1 * low, 0.9 * high)
    assert abs(band_energy(out, 1.1 * low, 0.9 * high) / inside - 1) < 1e-3  # the band passes untouched


def test_equaliser_applies_its_gain_at_each_frequency():
    gains = torch.tensor([-6.0, 0.0, 6.0, 3.0, -3.0, 0.0])
    points = torch.logspace(math.log10(100), math.log10(RATE / 2), 6)
    for freq, gain in zip(points[1:5].tolist(), gains[1:5].tolist()):
        freq = round(freq)  # a whole number of cycles per second: one exact FFT bin
        sine = torch.from_numpy(tone(1.0, RATE, freq=freq)[:, 0])
        assert abs(power_db(equalize(sine, RATE, gains)) - power_db(sine) - gain) < 0.05


def test_frequency_warp_moves_a_spectral_peak_by_its_factor():
    extractor = FeatureExtractor(FeatureConfig())
    power = extractor.mel.spectrogram(torch.from_numpy(tone(0.5, RATE, freq=1000)[:, 0]))  # (257, frames)
    peak = int(power.mean(1).argmax())
    for alpha in (0.9, 1.1):
        warped = warp_filters(torch.eye(power.shape[0]), alpha).T @ power  # the warped spectrum itself
        assert abs(int(warped.mean(1).argmax()) - peak * alpha) <= 1
    assert torch.equal(warp_filters(torch.eye(257), 1.0), torch.eye(257))
    # the warped log-mel of the extractor is the warped spectrum through the same filters
    feats = extractor.log_mel(torch.from_numpy(tone(0.5, RATE, freq=1000)[:, 0]), warp=1.1)
    mel_peak, plain_peak = int(feats.mean(0).argmax()), int(extractor.log_mel(torch.from_numpy(tone(0.5, RATE, freq=1000)[:, 0])).mean(0).argmax())
    assert mel_peak > plain_peak


def test_speed_perturbation_changes_length_by_the_factor():
    waveform = torch.randn(RATE)
    assert speed_perturb(waveform, 1.0, RATE) is waveform
    assert abs(speed_perturb(waveform, 1.1, RATE).shape[0] - RATE / 1.1) <= 1
    assert abs(speed_perturb(waveform, 0.9, RATE).shape[0] - RATE / 0.9) <= 1


def _band_db(waveform: torch.Tensor, low_hz: float, high_hz: float) -> float:
    """Energy between the two frequencies, in dB relative to the whole signal's."""
    power = torch.fft.rfft(waveform * torch.hann_window(waveform.numel())).abs().pow(2)
    hz = torch.fft.rfftfreq(waveform.numel(), 1 / RATE)
    band = power[(hz >= low_hz) & (hz <= high_hz)].sum()
    return float(10 * torch.log10(band / power.sum()))


def test_speed_perturbation_moves_a_tone_by_the_factor_and_removes_what_leaves_the_band():
    low = speed_perturb(torch.from_numpy(tone(1.0, RATE, freq=3000)[:, 0]), 1.1, RATE)
    assert _band_db(low, 3250, 3350) > -0.5  # 3.0 kHz played 1.1 times faster sounds at 3.3 kHz
    # 7.6 kHz sped up lands at 8.36 kHz, above the 8 kHz Nyquist frequency: it must go, not fold
    # back to 7.64 kHz (a short sinc kernel's transition band lets it through at about -30 dB)
    high = speed_perturb(torch.from_numpy(tone(1.0, RATE, freq=7600)[:, 0]), 1.1, RATE)
    steady = high[RATE // 8: -RATE // 8]  # away from the clicks where the tone starts and stops
    assert float(steady.pow(2).mean()) < 1e-9 * 0.125  # under -90 dB of the 0.5-amplitude sine's power


def test_spec_augment_masks_bands_and_spans_and_is_reproducible():
    feats = torch.randn(200, 40) + 5
    cfg = AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_max_ratio=0.1)
    a = spec_augment(feats, cfg, torch.Generator().manual_seed(3))
    b = spec_augment(feats, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    zero_cols = (a == 0).all(0).sum()
    zero_rows = (a == 0).all(1).sum()
    assert 0 < zero_cols <= 20 and 0 < zero_rows <= 40


def everything() -> AugmentConfig:
    return AugmentConfig(pitch_prob=1.0, vtlp_prob=1.0, reverb_prob=1.0, noise_prob=1.0, babble_share=0.5,
                         band_prob=1.0, eq_prob=1.0, gain_prob=1.0)


def test_a_chain_is_reproducible_from_its_seed_and_changes_with_it(speech):
    others = [speech.roll(1000 * i) for i in range(5)]
    augmenter = WaveformAugmenter(everything(), RATE, others.__getitem__, len(others))
    runs = [augmenter(speech, torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)]
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0]) or runs[0][1] != runs[2][1]
    for waveform, warp in runs:
        assert torch.isfinite(waveform).all() and 0.8 < warp < 1.3
        assert abs(waveform.numel() / speech.numel() - 1) < 0.3  # speed and pitch change the length


def test_user_noise_and_rir_folders_are_used(tmp_path, speech):
    (tmp_path / "noise").mkdir()
    (tmp_path / "rir").mkdir()
    sf.write(tmp_path / "noise" / "hum.wav", tone(3.0, RATE, freq=50)[:, 0] * 0.1, RATE)
    impulse = np.zeros(800, dtype=np.float32)
    impulse[0], impulse[400] = 1.0, 0.9  # an echo 25 ms later
    sf.write(tmp_path / "rir" / "echo.flac", impulse, RATE)
    cfg = AugmentConfig(speed_factors=[], noise_prob=1.0, reverb_prob=1.0, snr_range=[0.0, 0.0],
                        noise_dir=str(tmp_path / "noise"), rir_dir=str(tmp_path / "rir"))
    augmenter = WaveformAugmenter(cfg, RATE)
    hummed = 0
    for seed in range(12):
        out, _ = augmenter(speech, torch.Generator().manual_seed(seed))
        hummed += band_energy(out, 40, 60) > 0.3 * band_energy(out, 0, RATE / 2)
    assert 2 <= hummed <= 11  # about half the noises come from the folder


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing", "not a folder"),
    (lambda d: d, "no audio files"),
    (lambda d: (d / "bad.wav").write_bytes(b"RIFF not really") and d, "cannot read audio"),
])
def test_a_bad_noise_folder_is_one_clear_error(tmp_path, make, message):
    folder = make(tmp_path)
    with pytest.raises(ConfigError, match=message) as caught:
        AudioFolder(str(folder), "augment.noise_dir")
    assert str(caught.value).startswith("augment.noise_dir") and "\n" not in str(caught.value)


def test_fast_fft_length_is_the_next_length_with_factors_2_3_5_only():
    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in [*range(1, 400), 16001, 48000 * 7 + 1, 999_999]:
        expected = next(m for m in range(n, 2 * n + 1) if smooth(m))
        assert fast_fft_length(n) == expected, n


def test_edge_silence_surrounds_the_speech_with_up_to_its_length_of_zeros(speech):
    cfg = AugmentConfig(speed_factors=[1.0], edge_silence_prob=1.0, edge_silence=0.5)
    augmenter = WaveformAugmenter(cfg, RATE)
    lengths = set()
    for seed in range(5):
        out, _ = augmenter(speech, torch.Generator().manual_seed(seed))
        before = int((out != 0).nonzero()[0])
        after = out.numel() - 1 - int((out != 0).nonzero()[-1])
        lead = int((speech != 0).nonzero()[0])
        assert torch.equal(out[before - lead: before - lead + speech.numel()], speech)
        assert 0 <= before - lead <= 0.5 * RATE and out.numel() - speech.numel() <= RATE
        lengths.add(out.numel())
        assert after >= 0
    assert len(lengths) > 1  # drawn per utterance


def test_trimming_keeps_the_frames_within_its_floor_of_the_loudest():
    """Silence, a weak onset 25 dB under the vowel, the vowel, silence: a 20 dB floor cuts the
    onset away with the silence, a 35 dB floor keeps it."""
    g = torch.Generator().manual_seed(0)
    frame = RATE // 100
    quiet = 10 ** (-60 / 20) * torch.randn(30 * frame, generator=g)
    onset = 10 ** (-25 / 20) * torch.randn(8 * frame, generator=g)
    vowel = torch.sin(2 * math.pi * 220.0 * torch.arange(30 * frame) / RATE) * math.sqrt(2)
    signal = torch.cat([quiet, onset, vowel, quiet])
    end = quiet.numel() + onset.numel() + vowel.numel()
    for floor_db, start in [(20.0, quiet.numel() + onset.numel()), (35.0, quiet.numel())]:
        out = trim_to_loudness(signal, RATE, floor_db)
        assert torch.equal(out, signal[start: end]), floor_db


def test_the_chain_trims_at_a_floor_drawn_from_its_range_and_only_when_drawn(speech):
    cfg = AugmentConfig(speed_factors=[1.0], trim_prob=0.5, trim_db_range=[10.0, 35.0])
    augmenter = WaveformAugmenter(cfg, RATE)
    frame = RATE // 100

    def span(x: torch.Tensor) -> tuple[int, int]:  # where a trimmed piece lies in the speech
        for start in range(0, speech.numel() - x.numel() + 1, frame):
            if torch.equal(speech[start: start + x.numel()], x):
                return start, start + x.numel()
        raise AssertionError("not a frame-aligned piece of the speech")

    tightest, widest = span(trim_to_loudness(speech, RATE, 10.0)), span(trim_to_loudness(speech, RATE, 35.0))
    lengths = []
    for seed in range(40):
        out, _ = augmenter(speech, torch.Generator().manual_seed(seed))
        if out.numel() == speech.numel():
            assert torch.equal(out, speech)  # not drawn: untouched
        else:  # cut at a floor between 10 and 35 dB: between the two cuts
            start, end = span(out)
            assert widest[0] <= start <= tightest[0] and tightest[1] <= end <= widest[1]
        lengths.append(out.numel())
    trimmed = [n for n in lengths if n != speech.numel()]
    assert 8 < len(trimmed) < 32 and len(set(trimmed)) > 2  # about half drawn, at different floors


def test_trimming_digital_silence_or_a_frame_keeps_it():
    silence = torch.zeros(RATE)
    assert torch.equal(trim_to_loudness(silence, RATE, 20.0), silence)
    short = torch.randn(RATE // 100)
    assert torch.equal(trim_to_loudness(short, RATE, 20.0), short)


def test_joined_utterances_lie_at_tight_edges_on_either_side_of_the_pause():
    frame = RATE // 100
    silence = torch.zeros(20 * frame)
    first, second = torch.randn(30 * frame), 0.5 * torch.randn(12 * frame)
    joined = join_with_pause(torch.cat([silence, first, silence]), torch.cat([silence, second]), RATE, 0.37,
                             (20.0, 20.0))
    pause = int(0.37 * RATE)
    assert joined.numel() == first.numel() + pause + second.numel()
    assert torch.equal(joined[: first.numel()], first) and torch.equal(joined[-second.numel():], second)
    assert not joined[first.numel(): first.numel() + pause].any()
