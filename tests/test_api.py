"""The Python API (asr.load_model): what the README shows, run as written, and that it gives what
the command line gives."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import asr
from asr.data import Utterance, write_manifest
from conftest import run_cli

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_example_runs_as_written(trained_tiny, tmp_path, capsys):
    model_path, manifest, _ = trained_tiny
    wav = Path(json.loads(manifest.read_text().splitlines()[0])["audio_filepath"])
    (tmp_path / "exp").mkdir()
    (tmp_path / "data" / "wav").mkdir(parents=True)
    shutil.copy(model_path, tmp_path / "exp" / "model.pt")
    shutil.copy(wav, tmp_path / "data" / "wav" / "test-00000.wav")
    write_manifest(tmp_path / "data" / "test.jsonl", [Utterance(tmp_path / "data" / "wav" / "test-00000.wav",
                                                               sf.info(wav).duration, "yes no")])
    code = re.search(r"\*\*From Python\.\*\*.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith("WER ") and any(line.startswith("final ") for line in printed)


def test_a_file_gives_the_text_of_asr_transcribe_with_word_times(trained_tiny):
    model_path, manifest, rates = trained_tiny
    wav = rates.utterances[0].key
    model = asr.load_model(model_path, device="cpu")
    result = model.transcribe(wav)
    cli = run_cli("transcribe", str(model_path), wav)
    assert cli.returncode == 0 and result.text == cli.stdout.strip() == rates.utterances[0].hypothesis
    assert [w.word for w in result.words] == result.text.split()
    assert all(0 <= w.start < w.end <= result.duration + 1e-6 and 0 < w.confidence <= 1 for w in result.words)
    assert model.evaluate(manifest).summary() == rates.summary()


def test_samples_give_the_words_of_their_file(trained_tiny):
    import librosa

    model_path, _, rates = trained_tiny
    wav = rates.utterances[0].key
    model = asr.load_model(model_path, device="cpu")
    samples, rate = sf.read(wav, dtype="float32")
    same = model.transcribe(samples, sample_rate=rate)
    assert same.text == model.transcribe(wav).text and [w.word for w in same.words] == same.text.split()
    stereo = model.transcribe(samples[:, None].repeat(2, axis=1), sample_rate=rate)
    assert stereo.text == same.text
    faster = librosa.resample(samples, orig_sr=rate, target_sr=16000)  # another rate, resampled back inside
    from asr.scoring import score

    assert score([same.text], [model.transcribe(faster, sample_rate=16000).text]).wer <= 12.5


def test_stream_gives_the_events_of_asr_stream_json(trained_tiny):
    model_path, _, rates = trained_tiny
    wav = rates.utterances[0].key
    model = asr.load_model(model_path, device="cpu")
    samples, rate = sf.read(wav, dtype="float32")
    blocks = [samples[i : i + rate // 50] for i in range(0, len(samples), rate // 50)]
    events = [e.as_dict() for e in model.stream(blocks, sample_rate=rate)]
    cli = run_cli("stream", str(model_path), "--input", wav, "--no-realtime", "--json")
    assert cli.returncode == 0 and events == [json.loads(line) for line in cli.stdout.splitlines()]
    assert events[-1]["type"] == "final" and events[-1]["text"] == rates.utterances[0].hypothesis


def test_bad_input_raises_the_projects_error_with_the_clis_message(trained_tiny, tmp_path):
    model_path, _, _ = trained_tiny
    with pytest.raises(asr.AsrError, match="missing.pt: checkpoint not found"):
        asr.load_model(tmp_path / "missing.pt")
    with pytest.raises(asr.AsrError, match="^beam_sizes: not a decoding option"):
        asr.load_model(model_path, beam_sizes=3)
    with pytest.raises(asr.AsrError, match="^beam_size=0: must be at least 1"):
        asr.load_model(model_path, method="beam", beam_size=0)
    model = asr.load_model(model_path, device="cpu")
    with pytest.raises(asr.AsrError, match="^sample_rate=None: samples need their sample rate"):
        model.transcribe(np.zeros(100, dtype=np.float32))
    with pytest.raises(asr.AsrError, match="samples contain NaN"):
        model.transcribe(np.full(100, np.nan, dtype=np.float32), sample_rate=8000)
    # one sample at 48 kHz is none at the model's 8 kHz: refused as the same audio in a file is
    with pytest.raises(asr.AsrError, match=r"^samples too short \(1 at 48000 Hz are none at 8000 Hz\)"):
        model.transcribe(np.zeros(1, dtype=np.float32), sample_rate=48000)
