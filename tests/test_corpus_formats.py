"""Each corpus's preparation on a tiny copy written here in the corpus's real layout and file
formats (NIST SPHERE, headerless big-endian raw, FLAC, MP3, tsv, stm, csv), checked line by line
against the manifests it must produce."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import load_audio
from asr.cli import main
from asr.corpora import prepare_corpus
from asr.corpora.common import Archive, fetch_and_extract
from asr.data import Utterance, read_manifest, write_manifest
from asr.errors import AsrError


def samples(seconds: float, rate: int, level: float = 0.1) -> np.ndarray:
    return (level * np.sin(np.arange(int(seconds * rate)) * 0.05)).astype(np.float32)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def texts(path: Path) -> list[str]:
    return [record["text"] for record in lines(path)]


# ---------------------------------------------------------------- factories, one per corpus


def make_yesno(root: Path, count: int = 20) -> Path:
    root.mkdir(parents=True)
    for n in range(count):
        bits = [(n >> b) & 1 for b in range(8)]
        sf.write(root / ("_".join(map(str, bits)) + ".wav"), samples(0.5 + n / 100, 8000), 8000, subtype="PCM_16")
    return root


AN4_TRAIN = [("fash", "an251-fash-b", "<s> RUBOUT G M E F THREE NINE </s> (an251-fash-b)"),
             ("fbbh", "an76-fbbh-b", "<s> ENTER FOUR FIVE </s> (an76-fbbh-b)")]
AN4_TEST = [("fcaw", "cen1-fcaw-b", "<s> ERASE C Q Q F SEVEN </s> (cen1-fcaw-b)")]


def make_an4_cmu(root: Path, raw: bool = False) -> Path:
    """The CMU release: etc/ lists and wav/an4{,test}_clstk/<speaker>/<id>.{sph|raw}."""
    for split, folder, items in (("train", "an4_clstk", AN4_TRAIN), ("test", "an4test_clstk", AN4_TEST)):
        etc = root / "an4" / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / f"an4_{split}.fileids").write_text("".join(f"{folder}/{spk}/{i}\n" for spk, i, _ in items))
        (etc / f"an4_{split}.transcription").write_text("".join(t + "\n" for _, _, t in items))
        for n, (spk, utt, _) in enumerate(items):
            path = root / "an4" / "wav" / folder / spk / utt
            path.parent.mkdir(parents=True, exist_ok=True)
            audio = samples(1.0 + n / 10, 16000)
            if raw:
                (audio * 32767).astype(">i2").tofile(path.with_suffix(".raw"))
            else:
                sf.write(path.with_suffix(".sph"), audio, 16000, format="NIST", subtype="PCM_16")
    return root


def make_an4_deepspeech(root: Path) -> Path:
    for split, items in (("train", AN4_TRAIN), ("val", AN4_TRAIN[:1]), ("test", AN4_TEST)):
        for spk, utt, text in items:
            folder = root / split / "an4"
            (folder / "wav").mkdir(parents=True, exist_ok=True)
            (folder / "txt").mkdir(parents=True, exist_ok=True)
            sf.write(folder / "wav" / f"{utt}.wav", samples(1.2, 16000), 16000, subtype="PCM_16")
            (folder / "txt" / f"{utt}.txt").write_text(text.split("</s>")[0].replace("<s>", "").strip())
    return root


def make_librispeech(root: Path, subsets: dict[str, list[tuple[str, str, list[str]]]]) -> Path:
    """subsets: name -> [(speaker, chapter, [sentences])]; FLAC + <spk>-<chapter>.trans.txt."""
    for subset, chapters in subsets.items():
        for speaker, chapter, sentences in chapters:
            folder = root / "LibriSpeech" / subset / speaker / chapter
            folder.mkdir(parents=True)
            with open(folder / f"{speaker}-{chapter}.trans.txt", "w") as trans:
                for n, sentence in enumerate(sentences):
                    utt = f"{speaker}-{chapter}-{n:04d}"
                    sf.write(folder / f"{utt}.flac", samples(0.5 + n / 10, 16000), 16000, format="FLAC")
                    trans.write(f"{utt} {sentence}\n")
    return root


def make_commonvoice(root: Path, rows: dict[str, list[tuple[str, str]]], durations_tsv: bool = True) -> Path:
    """rows: split -> [(clip name, sentence)]; MP3 clips at 48 kHz and tsv files with a header."""
    (root / "clips").mkdir(parents=True)
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"
    durations = []
    for split, items in rows.items():
        with open(root / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write(header)
            for clip, sentence in items:
                if not (root / "clips" / clip).exists():
                    sf.write(root / "clips" / clip, samples(1.0, 48000), 48000, format="MP3")
                    durations.append(f"{clip}\t1000\n")
                f.write(f"abc\t{clip}\tid\t{sentence}\t\t2\t0\t\t\t\t\t{root.name}\t\n")
    if durations_tsv:
        (root / "clip_durations.tsv").write_text("clip\tduration[ms]\n" + "".join(durations))
    return root


STM = """AlGore_2009 1 AlGore_2009 0.00 1.50 <o,f0,male> ignore_time_segment_in_scoring
AlGore_2009 1 AlGore_2009 1.50 3.25 <o,f0,male> i 'm going to talk <unk> about the climate
AlGore_2009 1 AlGore_2009 3.25 4.00 <o,f0,male> it 's true
"""


def make_tedlium(root: Path) -> Path:
    for split in ("train", "dev", "test"):
        base = root / "TEDLIUM_release-3" / "legacy" / split
        (base / "sph").mkdir(parents=True)
        (base / "stm").mkdir(parents=True)
        # a ramp: sample value = time, so a segment's samples show where it was cut
        rate = 16000
        ramp = (np.arange(5 * rate) / rate / 10).astype(np.float32)
        sf.write(base / "sph" / "AlGore_2009.sph", ramp, rate, format="NIST", subtype="PCM_16")
        (base / "stm" / "AlGore_2009.stm").write_text(STM)
    return root


def make_ljspeech(root: Path) -> Path:
    base = root / "LJSpeech-1.1"
    (base / "wavs").mkdir(parents=True)  # the archive's own top folder: accepted as data_dir's child
    rows = [("LJ001-0001", "Printing, in 1884.", "Printing, in eighteen eighty-four."),
            ("LJ005-0002", "Dev passage.", "Dev passage."),
            ("LJ010-0003", "Test passage!", "Test passage!"),
            ("LJ011-0004", "Mr. Smith", "Mister Smith")]
    with open(base / "metadata.csv", "w", encoding="utf-8") as f:
        for utt, raw, normalized in rows:
            sf.write(base / "wavs" / f"{utt}.wav", samples(0.8, 22050), 22050, subtype="PCM_16")
            f.write(f"{utt}|{raw}|{normalized}\n")
    return root


# ---------------------------------------------------------------- the corpora


def test_yesno_alternates_train_and_test_and_holds_dev_out(tmp_path):
    data = make_yesno(tmp_path / "yesno")
    paths = prepare_corpus("yesno", str(data), str(tmp_path / "out"))
    train, dev, test = (lines(paths[n]) for n in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (6, 4, 10)  # dev: every second of train, from the third
    files = sorted(p.name for p in data.glob("*.wav"))
    assert [Path(r["audio_filepath"]).name for r in test] == files[1::2]
    assert {Path(r["audio_filepath"]).name for r in train + dev} == set(files[0::2])
    first = test[0]
    assert first["text"] == " ".join("yes" if b == "1" else "no" for b in Path(first["audio_filepath"]).stem.split("_"))
    assert first["duration"] == pytest.approx(sf.info(first["audio_filepath"]).duration, abs=1e-4)


def test_yesno_real_corpus_split(yesno_dir, tmp_path):
    paths = prepare_corpus("yesno", str(yesno_dir), str(tmp_path))
    assert [len(lines(paths[n])) for n in ("train", "dev", "test")] == [25, 5, 30]
    starts = {n: {r["text"].split()[0] for r in lines(paths[n])} for n in ("train", "test")}
    assert starts == {"train": {"yes", "no"}, "test": {"yes", "no"}}  # Kaldi's split fails this


@pytest.mark.parametrize("raw", [False, True], ids=["sphere", "raw-bigendian"])
def test_an4_cmu_layout(tmp_path, raw):
    data = make_an4_cmu(tmp_path / "an4data", raw=raw)
    out = tmp_path / "out"
    paths = prepare_corpus("an4", str(data), str(out))
    train, dev, test = (lines(paths[n]) for n in ("train", "dev", "test"))
    assert [r["text"] for r in train] == ["rubout g m e f three nine", "enter four five"]
    assert dev == []  # every tenth speaker: none of two
    assert test[0]["text"] == "erase c q q f seven" and test[0]["duration"] == pytest.approx(1.0)
    audio = Path(paths["test"].parent / test[0]["audio_filepath"])
    assert audio.suffix == (".wav" if raw else ".sph")
    if raw:  # converted once to WAV beside the manifests, samples intact
        assert audio.parent == out / "wav"
        expected = (samples(1.0, 16000) * 32767).astype(np.int16) / 32768
        assert np.allclose(load_audio(audio, 16000).numpy(), expected, atol=1e-4)


def test_an4_deepspeech_layout(tmp_path):
    data = make_an4_deepspeech(tmp_path / "an4_dataset")
    paths = prepare_corpus("an4", str(data), str(tmp_path / "out"))
    assert texts(paths["train"]) == ["rubout g m e f three nine", "enter four five"]  # sorted file names
    assert texts(paths["dev"]) == ["rubout g m e f three nine"]
    assert texts(paths["test"]) == ["erase c q q f seven"]


def test_librispeech_subsets_and_train_960(tmp_path):
    chapters = lambda spk: [(spk, "100", ["HELLO WORLD", "IT'S A TEST"])]  # noqa: E731
    data = make_librispeech(tmp_path / "ls", {"dev-clean": chapters("84"), "train-clean-100": chapters("19"),
                                             "train-clean-360": chapters("20"), "train-other-500": chapters("21")})
    paths = prepare_corpus("librispeech", str(data), str(tmp_path / "out"), subsets=["dev-clean", "train-960"])
    assert set(paths) == {"dev-clean", "train-960"}
    dev = lines(paths["dev-clean"])
    assert [Path(r["audio_filepath"]).name for r in dev] == ["84-100-0000.flac", "84-100-0001.flac"]
    assert [r["text"] for r in dev] == ["HELLO WORLD", "IT'S A TEST"]
    assert [r["duration"] for r in dev] == [0.5, 0.6]
    speakers = [Path(r["audio_filepath"]).name.split("-")[0] for r in lines(paths["train-960"])]
    assert speakers == ["19", "19", "20", "20", "21", "21"]
    with pytest.raises(AsrError, match="unknown LibriSpeech subset 'train-clean-1000'"):
        prepare_corpus("librispeech", str(data), str(tmp_path / "o2"), subsets=["train-clean-1000"])
    with pytest.raises(AsrError, match="test-clean: not found"):
        prepare_corpus("librispeech", str(data), str(tmp_path / "o3"), subsets=["test-clean"])


def test_librispeech_missing_flac_names_transcript_line(tmp_path):
    data = make_librispeech(tmp_path / "ls", {"dev-clean-2": [("84", "100", ["A", "B"])]})
    (data / "LibriSpeech/dev-clean-2/84/100/84-100-0001.flac").unlink()
    with pytest.raises(AsrError, match=r"84-100\.trans\.txt:2: audio file not found"):
        prepare_corpus("librispeech", str(data), str(tmp_path / "out"), subsets=["dev-clean-2"])
    assert not (tmp_path / "out" / "dev-clean-2.jsonl").exists()


def test_commonvoice_mp3_tsv_and_english_normalization(tmp_path):
    rows = {"train": [("a.mp3", "Hello, World! It’s 42 o'clock."), ("b.mp3", "\"Quoted\" words—dashes")],
            "dev": [("c.mp3", "Second one")], "test": [("d.mp3", "...")]}
    data = make_commonvoice(tmp_path / "en", rows)
    paths = prepare_corpus("commonvoice", str(data), str(tmp_path / "out"))
    assert texts(paths["train"]) == ["hello world it's forty two o'clock", "quoted words dashes"]
    assert lines(paths["dev"])[0]["duration"] == 1.0  # from clip_durations.tsv
    assert lines(paths["test"]) == []  # the sentence was only punctuation: skipped


def test_commonvoice_turkish_casing_and_probed_durations(tmp_path):
    rows = {"train": [("t.mp3", "İstanbul'da IŞIK var")], "dev": [("u.mp3", "Bir")], "test": [("v.mp3", "İki")]}
    data = make_commonvoice(tmp_path / "tr", rows, durations_tsv=False)
    paths = prepare_corpus("commonvoice", str(data), str(tmp_path / "out"))
    train = lines(paths["train"])
    assert train[0]["text"] == "istanbul'da ışık var"
    assert train[0]["duration"] == pytest.approx(1.0, abs=0.08)  # MP3 header probe (encoder padding)


def test_commonvoice_missing_clip_names_tsv_line(tmp_path):
    data = make_commonvoice(tmp_path / "en", {"train": [("a.mp3", "one"), ("b.mp3", "two")], "dev": [], "test": []})
    (data / "clips" / "b.mp3").unlink()
    with pytest.raises(AsrError, match=r"train\.tsv:3: audio file not found: .*b\.mp3"):
        prepare_corpus("commonvoice", str(data), str(tmp_path / "out"))


def test_tedlium_stm_segments_are_offsets_into_the_talk(tmp_path):
    data = make_tedlium(tmp_path / "ted")
    paths = prepare_corpus("tedlium", str(data), str(tmp_path / "out"))
    records = lines(paths["test"])
    assert [(r["offset"], r["duration"], r["text"]) for r in records] == [
        (1.5, 1.75, "i'm going to talk about the climate"),  # ignore_time_segment dropped, <unk> removed
        (3.25, 0.75, "it's true"),
    ]
    utt = read_manifest(paths["test"])[0]
    audio = load_audio(utt.audio_filepath, 16000, utt.offset, utt.duration).numpy()
    assert len(audio) == 28000 and audio[0] == pytest.approx(0.15, abs=1e-3)  # the ramp at 1.5 s


def test_ljspeech_uses_normalized_text_and_splits_by_chapter(tmp_path):
    data = make_ljspeech(tmp_path / "lj")
    paths = prepare_corpus("ljspeech", str(data), str(tmp_path / "out"))
    assert texts(paths["train"]) == ["Printing, in eighteen eighty-four.", "Mister Smith"]
    assert texts(paths["dev"]) == ["Dev passage."] and texts(paths["test"]) == ["Test passage!"]
    assert lines(paths["train"])[0]["duration"] == pytest.approx(0.8, abs=1e-4)


@pytest.mark.parametrize("corpus, expected", [
    ("yesno", "expected the yesno layout"),
    ("an4", "an4: not found; expected the CMU AN4 layout"),
    ("librispeech", "LibriSpeech/train-clean-100: not found; expected the LibriSpeech layout"),
    ("commonvoice", "clips: not found; expected the Common Voice layout"),
    ("tedlium", "legacy/train: not found; expected the TED-LIUM 3 layout"),
    ("ljspeech", "metadata.csv: not found; expected the LJSpeech layout"),
    ("fsdd", "recordings: not found; expected the FSDD layout"),
])
def test_wrong_layout_names_the_first_missing_path(tmp_path, capsys, corpus, expected):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", corpus, str(tmp_path / "out"), "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not any((tmp_path / "out").glob("*.jsonl"))


def test_tedlium_bad_stm_line_is_named(tmp_path):
    data = make_tedlium(tmp_path / "ted")
    stm = data / "TEDLIUM_release-3/legacy/dev/stm/AlGore_2009.stm"
    stm.write_text(STM + "AlGore_2009 1 AlGore_2009 4.0 x <o> words\n")
    with pytest.raises(AsrError, match=r"AlGore_2009\.stm:4: start/end times"):
        prepare_corpus("tedlium", str(data), str(tmp_path / "out"))


def test_option_for_another_corpus_is_refused(tmp_path, capsys):
    assert main(["prepare", "yesno", str(tmp_path), "--data-dir", str(tmp_path), "--language", "en"]) == 2
    assert "--language does not apply to this corpus" in capsys.readouterr().err


def test_interrupted_manifest_write_leaves_the_old_manifest_and_no_temporary(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [Utterance(tmp_path / "a.wav", 1.0, "old")])

    def failing():
        yield Utterance(tmp_path / "b.wav", 1.0, "new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_manifest(path, failing())
    assert texts(path) == ["old"] and [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]


# ---------------------------------------------------------------- download + checksum


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def yesno_archive(www: Path) -> str:
    """waves_yesno.tar.gz as OpenSLR publishes it; returns its SHA-256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for wav in sorted(make_yesno(www.parent / "src").glob("*.wav")):
            tar.add(wav, arcname=f"waves_yesno/{wav.name}")
    (www / "waves_yesno.tar.gz").write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_download_checks_the_sha256_then_prepares(http_root, tmp_path, monkeypatch):
    www, url = http_root
    digest = yesno_archive(www)
    import asr.corpora.yesno as yesno

    monkeypatch.setattr(yesno, "ARCHIVE", Archive(f"{url}/waves_yesno.tar.gz", digest, "waves_yesno"))
    paths = prepare_corpus("yesno", str(tmp_path / "dl"), str(tmp_path / "out"), download=True)
    assert len(lines(paths["test"])) == 10 and (tmp_path / "dl" / "waves_yesno").is_dir()
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["waves_yesno"]  # no archive left behind


def test_download_with_wrong_checksum_is_discarded(http_root, tmp_path):
    www, url = http_root
    yesno_archive(www)
    with pytest.raises(AsrError, match="checksum mismatch"):
        fetch_and_extract(Archive(f"{url}/waves_yesno.tar.gz", "0" * 64, "waves_yesno"), tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []
    with pytest.raises(AsrError, match="download failed"):
        fetch_and_extract(Archive(f"{url}/missing.tar.gz", None, "x"), tmp_path / "dl")


def test_archive_escaping_its_folder_is_refused(http_root, tmp_path):
    www, url = http_root
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (www / "evil.tar.gz").write_bytes(buffer.getvalue())
    with pytest.raises(AsrError):
        fetch_and_extract(Archive(f"{url}/evil.tar.gz", None, "x"), tmp_path / "dl")
    assert not (tmp_path / "evil.txt").exists()
