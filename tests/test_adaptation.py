"""Two-pass speaker adaptation: a per-speaker scale and shift of the features, fitted to transcripts."""

import copy
import json
import math

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from asr.adaptation import (AdaptOptions, OnlineAdaptation, ScaleShift, adapt_speakers, confidence, fit_scale_shift,
                            speaker_groups, surest)
from asr.audio import load_audio
from asr.corpora.voices import espeak_voice
from asr.data import SpeechDataset, Utterance, write_manifest
from asr.decoding import greedy_decode
from asr.errors import AsrError, ConfigError
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import AcousticModel, ModelConfig
from asr.tokenizer import CharTokenizer, TextNormalization
from asr.transcribe import Recognizer
from conftest import run_cli, speak
from test_speaker_norm import saved, utterance_extractor

TEXTS = ("one seven three zero two", "nine five two six one", "six eight four three seven")


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    """Two espeak-ng voices, three digit strings each (about 6 s of speech per voice)."""
    work = tmp_path_factory.mktemp("adapt")
    utts = []
    for name, voice in (("en-us", espeak_voice("en-us", "m3")), ("en-gb-x-rp", espeak_voice("en-gb-x-rp", "f2"))):
        for k, text in enumerate(TEXTS):
            path = speak(text, work / f"{name}-{k}.wav", voice=voice)
            utts.append(Utterance(path, load_audio(path, 16000).numel() / 16000, text, speaker=name))
    return utts


@pytest.fixture(scope="module")
def learned(speakers):
    """A 1 × 32 BiLSTM trained until it transcribes the six utterances exactly."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(sorted(set("".join(TEXTS))), TextNormalization())
    model = AcousticModel(ModelConfig(num_layers=1, hidden_size=32, dropout=0.0), 80, tokenizer.vocab_size)
    dataset = SpeechDataset(speakers, utterance_extractor(), tokenizer)
    features = [dataset[i].features for i in range(len(speakers))]
    padded, lengths = torch.nn.utils.rnn.pad_sequence(features, batch_first=True), torch.tensor([len(f) for f in features])
    targets = [dataset.targets[i] for i in range(len(speakers))]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    recognizer = Recognizer(model, utterance_extractor(), tokenizer, "cpu")
    # A fixed number of steps can stop where the loss is low but one word is still wrong ("seven" read
    # as "sen"), and a machine's floating-point order decides which side: train until exact instead.
    for step in range(1, 1501):  # evaluate() puts the model back in training mode when it is done
        log_probs, out_lengths = model(padded, lengths)
        loss = F.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets), out_lengths, torch.tensor([len(t) for t in targets]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 and recognizer.evaluate(speakers).wer == 0.0:
            break
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    assert recognizer.evaluate(speakers).wer == 0.0  # else nothing below means anything
    return recognizer


def test_a_scale_and_shift_are_normalization_statistics():
    extractor = utterance_extractor()
    torch.manual_seed(1)
    log_mel, mean, std = torch.randn(50, 80) * 3 + 1, torch.randn(80), torch.rand(80) + 0.5
    transform = ScaleShift(torch.randn(80) * 0.3, torch.randn(80))
    by_stats = extractor.normalize(log_mel, transform.apply_to((mean, std)))
    by_transform = extractor.normalize(log_mel, (mean, std)) * transform.log_scale.exp() + transform.shift
    assert torch.allclose(by_stats, by_transform, atol=1e-4)


def test_the_model_is_surer_of_the_right_transcripts_and_the_surest_half_is_fitted(learned, speakers):
    dataset = SpeechDataset(speakers, learned.extractor, learned.tokenizer)
    for index in range(len(speakers)):
        features = dataset[index].features
        log_probs, _ = learned.model(features[None], torch.tensor([len(features)]))
        right = confidence(log_probs[0], dataset.targets[index].tolist())
        for other in {tuple(learned.tokenizer.encode(text)) for text in TEXTS} - {tuple(dataset.targets[index].tolist())}:
            assert confidence(log_probs[0], other) < right
    assert confidence(log_probs[0], [1] * (len(log_probs[0]) + 1)) == -math.inf  # cannot fit in the frames
    transcribed = {0: ([3], -2.0), 1: ([4], -0.5), 2: ([], 0.0), 3: ([5], -1.0), 4: ([6], -3.0)}
    assert surest(transcribed, [0, 1, 2, 3, 4, 9], 0.5) == [1, 3]  # no words, no transcript: left out
    assert surest(transcribed, [4], 0.5) == [4] and surest(transcribed, [0, 1, 3, 4], 1.0) == [0, 1, 3, 4]


def test_only_the_surest_half_of_each_speakers_transcripts_is_fitted_to(learned, speakers, monkeypatch):
    import asr.adaptation

    fitted_to = []

    def recording_fit(model, features, targets, start, options, seed=0):
        fitted_to.append(sorted(tuple(t) for t in targets))
        return start

    monkeypatch.setattr(asr.adaptation, "fit_scale_shift", recording_fit)
    voice = speakers[:3] * 2  # one voice, 12 s
    dataset = SpeechDataset(voice, learned.extractor, learned.tokenizer)
    right = [dataset.targets[i].tolist() for i in range(len(voice))]
    wrong = [learned.tokenizer.encode("zero")] * len(voice)
    # the first three utterances transcribed right and sure, the last three wrong and doubtful
    transcribed = {i: (right[i], -0.1 * i) if i < 3 else (wrong[i], -5.0 - i) for i in range(len(voice))}
    adapt_speakers(dataset, learned.model, lambda: transcribed, AdaptOptions(rounds=1))
    assert fitted_to == [sorted(tuple(t) for t in right[:3])]
    online = OnlineAdaptation(learned.model, 80, learned.extractor.cfg.hop_ms / 1000)
    online.add([(learned.extractor.log_mel(dataset.waveform(i)), transcribed[i]) for i in range(len(voice))],
               learned.extractor.normalize)
    assert fitted_to[1] == fitted_to[0]


def test_speakers_are_labels_or_all_the_inputs_as_one():
    assert speaker_groups(["a", "b", None, "a", None]) == [[0, 3], [1], [2, 4]]
    assert speaker_groups(["a", "b", None, "a"], use_labels=False) == [[0, 1, 2, 3]]
    assert speaker_groups([]) == []


def test_fitted_to_the_transcripts_the_statistics_undo_a_distortion(learned, speakers):
    """Statistics that scale the normalized features by 1.5 and shift them by -0.5 break
    recognition; fitted to the right transcripts, each speaker's transform takes them back."""
    dataset = SpeechDataset(speakers, learned.extractor, learned.tokenizer)
    for index in range(len(speakers)):
        log_mel = learned.extractor.log_mel(dataset.waveform(index))
        mean, std = log_mel.mean(0), log_mel.std(0, unbiased=False)
        dataset.norm_stats[index] = (mean + std / 3, std / 1.5)

    def wer() -> float:
        hypotheses = []
        for index in range(len(speakers)):
            features = dataset[index].features
            log_probs, lengths = learned.model(features[None], torch.tensor([len(features)]))
            hypotheses.append(learned.tokenizer.decode(greedy_decode(log_probs, lengths)[0].tokens).strip())
        return learned.score(speakers, _as_transcripts(speakers, hypotheses)).wer

    assert wer() > 50.0
    truth = {i: (dataset.targets[i].tolist(), 0.0) for i in range(len(speakers))}
    # the fit ends exact after 100-200 epochs, depending on how the audio rounds (after 100, one
    # "seven" can still read "sen"): 400 leave it room
    adapt_speakers(dataset, learned.model, lambda: truth, AdaptOptions(rounds=1, epochs=400, lr=0.02, keep_fraction=1.0))
    assert wer() == 0.0


def _as_transcripts(utts, texts):
    from asr.transcript import Transcript

    return [Transcript(str(u.audio_filepath), text, u.duration, 0.0) for u, text in zip(utts, texts)]


def test_a_fit_lowers_the_loss_of_its_targets_and_repeats_exactly(learned, speakers):
    dataset = SpeechDataset(speakers, learned.extractor, learned.tokenizer)
    features = [dataset[i].features * 1.7 - 0.4 for i in range(3)]
    targets = [dataset.targets[i].tolist() for i in range(3)]

    def loss(transform: ScaleShift) -> float:
        total = 0.0
        for x, y in zip(features, targets):
            log_probs, lengths = learned.model((x * transform.log_scale.exp() + transform.shift)[None], torch.tensor([len(x)]))
            total += F.ctc_loss(log_probs.transpose(0, 1), torch.tensor(y), lengths, torch.tensor([len(y)])).item()
        return total

    start = ScaleShift.identity(80)
    options = AdaptOptions(epochs=20, lr=0.02)
    fitted = fit_scale_shift(learned.model, features, targets, start, options, seed=3)
    assert loss(fitted) < 0.5 * loss(start)
    again = fit_scale_shift(learned.model, features, targets, start, options, seed=3)
    assert torch.equal(fitted.log_scale, again.log_scale) and torch.equal(fitted.shift, again.shift)
    assert not learned.model.training and all(p.grad is None for p in learned.model.parameters())


def test_a_speaker_with_too_little_audio_keeps_the_first_pass_statistics(learned, speakers):
    dataset = SpeechDataset(speakers, learned.extractor, learned.tokenizer)
    truth = {i: (dataset.targets[i].tolist(), 0.0) for i in range(len(speakers))}
    adapt_speakers(dataset, learned.model, lambda: truth, AdaptOptions(rounds=1, min_seconds=60.0))
    assert dataset.norm_stats == {}


def test_adapt_from_the_cli_and_python_agree_and_bad_requests_are_one_line(learned, speakers, tmp_path):
    path = saved(learned, tmp_path / "model.pt")
    manifest = write_manifest(tmp_path / "m.jsonl", speakers * 2)  # each voice 12 s: its surest half over 5 s
    done = run_cli("evaluate", str(path), str(manifest), "--speaker-norm", "--adapt", "--adapt-rounds", "2")
    assert done.returncode == 0, done.stderr
    assert "speaker adaptation, round 2: 2 of 2 speakers fitted" in done.stderr
    rates = learned.evaluate(manifest, speaker_norm=True, adapt=2)
    assert done.stdout.splitlines()[-1] == rates.summary()
    transcribed = run_cli("transcribe", str(path), *[str(u.audio_filepath) for u in speakers], "--adapt")
    assert transcribed.returncode == 0, transcribed.stderr
    assert "round 3: 1 of 1 speakers fitted" in transcribed.stderr  # the inputs as one speaker
    bad = run_cli("evaluate", str(path), str(manifest), "--adapt", "--adapt-rounds", "-1")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].endswith(
        "speaker adaptation: -1 rounds; it must be 0 (none) or more")
    with pytest.raises(ConfigError, match="speaker adaptation needs a model trained with features.normalization"):
        global_model = Recognizer(learned.model, FeatureExtractor(FeatureConfig()), learned.tokenizer, "cpu")
        global_model.evaluate(speakers, adapt=1)


def test_an_onnx_model_cannot_be_adapted(learned, speakers, tmp_path):
    pytest.importorskip("onnxruntime")
    from asr.export import export_onnx

    path = saved(learned, tmp_path / "model.pt")
    onnx = export_onnx(path, tmp_path / "model.onnx")
    with pytest.raises(AsrError, match=r"speaker adaptation needs a PyTorch checkpoint \(model.pt\)"):
        Recognizer.load(onnx).evaluate(speakers, adapt=1)
    streamed = run_cli("stream", str(onnx), "--input", str(speakers[0].audio_filepath), "--no-realtime", "--adapt")
    assert streamed.returncode != 0 and streamed.stderr.strip().splitlines()[-1].endswith(
        "speaker adaptation needs a PyTorch checkpoint (model.pt): an ONNX export cannot be fitted to")


def test_the_last_pass_decodes_with_the_adapted_statistics(learned, speakers, monkeypatch):
    import asr.transcribe

    adapted_datasets = []

    def recording(dataset, *args, **kwargs):
        adapt_speakers(dataset, *args, **kwargs)
        adapted_datasets.append(dataset)

    monkeypatch.setattr(asr.transcribe, "adapt_speakers", recording)
    utts = speakers * 2  # each voice 12 s: its surest half over the 5 s a fit needs
    adapted = learned.recognize_all(utts, keep_log_probs=True, speaker_norm=True, adapt=1)
    plain = learned.recognize_all(utts, keep_log_probs=True, speaker_norm=True)
    [dataset] = adapted_datasets
    assert sorted(dataset.norm_stats) == list(range(len(utts)))
    for index, transcript in enumerate(adapted):
        features = dataset[index].features
        expected, _ = learned.model(features[None], torch.tensor([len(features)]))
        assert torch.allclose(transcript.log_probs, expected[0], atol=1e-5)
        assert not torch.allclose(transcript.log_probs, plain[index].log_probs, atol=1e-3)


# ---- streaming: refitted after each final result ------------------------------------------


def _greedy_text(recognizer: Recognizer, features: torch.Tensor) -> str:
    log_probs, lengths = recognizer.model(features[None], torch.tensor([len(features)]))
    return recognizer.tokenizer.decode(greedy_decode(log_probs, lengths)[0].tokens).strip()


def test_online_adaptation_fitted_to_the_transcripts_undoes_a_distortion(learned, speakers):
    extractor, voice = learned.extractor, speakers[:3]
    log_mels = [extractor.log_mel(load_audio(u.audio_filepath, 16000)) for u in voice]
    targets = [learned.tokenizer.encode(u.text) for u in voice]

    def distorted(log_mel: torch.Tensor) -> torch.Tensor:  # features as a mismatched channel gives them
        return extractor.normalize(log_mel) * 1.5 - 0.5

    options = AdaptOptions(epochs=100, lr=0.02, keep_fraction=1.0)
    online = OnlineAdaptation(learned.model, 80, extractor.cfg.hop_ms / 1000, options)
    assert sum(_greedy_text(learned, distorted(m)) != u.text for m, u in zip(log_mels, voice)) >= 2
    online.add([(log_mels[0], ([], 0.0))], distorted)  # a final without words is not kept
    assert not online.kept
    for log_mel, tokens in zip(log_mels, targets):
        online.add([(log_mel, (tokens, 0.0))], distorted)
    assert online.fits >= 1  # once 5 s of speech are kept
    assert [_greedy_text(learned, online.transform(distorted(m))) for m in log_mels] == [u.text for u in voice]
    short = OnlineAdaptation(learned.model, 80, extractor.cfg.hop_ms / 1000, keep_seconds=1.0)
    short.add([(log_mel, (tokens, 0.0)) for log_mel, tokens in zip(log_mels, targets)], distorted)
    assert len(short.kept) == 1 and short.fits == 0  # the last segment only: too little to fit


def _mismatched(model: AcousticModel, scale: float) -> AcousticModel:
    """``model`` made to expect features ``x * scale`` (folded into the first layer's input
    weights): the mismatch a voice or channel makes, in a form whose cure is known. (A shift
    would also move the zero frames that pad a segment's end.)"""
    mismatched = copy.deepcopy(model)
    lstm = mismatched.rnns[0]
    with torch.no_grad():
        for direction in ("l0", "l0_reverse"):
            getattr(lstm, f"weight_ih_{direction}").div_(scale)
    return mismatched


def _one_voice_recording(speakers, path) -> list:
    """One voice's three utterances, twice, 1 s apart (a pause of 0.6 s ends a segment), written
    to ``path``; returned in 20 ms blocks, as a microphone delivers them."""
    pause = torch.zeros(16000)
    samples = torch.cat([torch.cat([load_audio(u.audio_filepath, 16000), pause]) for u in speakers[:3] * 2])
    sf.write(path, samples.numpy(), 16000)
    return [block.numpy() for block in torch.split(samples, 320)]


def _finals(events) -> list[str]:
    return [e.text for e in events if e.type == "final"]


def test_a_stream_hears_later_segments_through_the_speakers_transform(learned, speakers, tmp_path):
    from asr.stream import stream_events

    blocks = _one_voice_recording(speakers, tmp_path / "voice.wav")
    plain = list(learned.stream(blocks))
    mismatched = Recognizer(_mismatched(learned.model, 2.0), learned.extractor, learned.tokenizer, "cpu")
    unadapted = list(mismatched.stream(blocks))
    assert _finals(unadapted) != _finals(plain)
    cured = mismatched.streamer(adapt=True)  # the known cure, held fixed: partials and finals as the original's
    cured.adaptation.transform = ScaleShift(torch.full((80,), math.log(2.0)), torch.zeros(80))
    cured.adaptation.options = AdaptOptions(min_seconds=math.inf)
    assert list(stream_events(cured, blocks)) == plain
    adapted = mismatched.streamer(adapt=True)  # refitted after each final, from its own transcripts
    # segments cut to their sound are short: half a second lets the first final alone be fitted to
    adapted.adaptation.options = AdaptOptions(min_seconds=0.5)
    finals = _finals(stream_events(adapted, blocks))
    assert len(finals) == 6 and adapted.adaptation.fits == 6  # each with the block after its final
    assert finals[0] == _finals(unadapted)[0]  # before any fit, as without --adapt
    assert finals[1:] != _finals(unadapted)[1:]  # the later ones heard through the fitted transform


def test_a_stream_fits_each_segment_normalized_as_its_final_pass_was(learned, speakers, tmp_path):
    from asr.stream import stream_events

    blocks = _one_voice_recording(speakers, tmp_path / "voice.wav")
    streamer = learned.streamer(speaker_norm=True, adapt=True)
    final_passes, fitted = [], []
    final_log_probs, add = streamer._final_log_probs, streamer.adaptation.add

    def final_pass():
        final_passes.append(streamer.features.utterance(streamer.options.trim_db))
        return final_log_probs()

    def adding(segments, normalize):
        fitted.extend(normalize(log_mel) for log_mel, _ in segments)
        add(segments, normalize)

    streamer._final_log_probs, streamer.adaptation.add = final_pass, adding
    assert len(_finals(stream_events(streamer, blocks))) == 6
    assert len(fitted) == 6  # each taken in with the block after its final (the pause goes on)
    for features, heard in zip(fitted, final_passes):
        assert torch.allclose(features, heard, atol=1e-5)


def test_stream_adapt_from_the_cli_equals_python_and_bad_models_are_one_line(learned, speakers, tmp_path):
    path = saved(learned, tmp_path / "model.pt")
    wav = tmp_path / "voice.wav"
    blocks = _one_voice_recording(speakers, wav)
    done = run_cli("stream", str(path), "--input", str(wav), "--no-realtime", "--json", "--speaker-norm", "--adapt")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    expected = learned.stream(blocks, speaker_norm=True, adapt=True)
    assert [e for e in events if e["type"] == "final"] == [e.as_dict() for e in expected if e.type == "final"]
    with pytest.raises(ConfigError, match="speaker adaptation needs a model trained with features.normalization"):
        Recognizer(learned.model, FeatureExtractor(FeatureConfig()), learned.tokenizer, "cpu").streamer(adapt=True)

