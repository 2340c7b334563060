"""``asr serve``: real WebSocket and HTTP clients against a real server on a real port, a real
headless Chromium using the page with a speech file as its microphone, and misbehaving clients."""

import asyncio
import json
import logging
import math
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import aiohttp
import numpy as np
import pytest
import soundfile as sf
from aiohttp import web

from asr.scoring import score
from asr.server import Close, Limits, Server, StreamSession
from asr.transcribe import Recognizer
from conftest import run_cli


class Running:
    """A Server's app on 127.0.0.1 (a free port), in its own thread and event loop."""

    def __init__(self, server: Server):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start() -> None:
            self.runner = web.AppRunner(server.app())
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                                       daemon=True)
        self.thread.start()
        assert started.wait(30)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture(scope="module")
def recognizer(trained_tiny):
    return Recognizer.load(trained_tiny[0], "cpu")


@pytest.fixture(scope="module")
def served(recognizer):
    running = Running(Server(recognizer))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def strict(recognizer):
    limits = Limits(max_streams=1, max_message_bytes=4096, max_stream_seconds=8.0, max_upload_bytes=20_000,
                    idle_seconds=1.0)
    running = Running(Server(recognizer, limits, token="secret"))
    yield running
    running.stop()


async def stream_file(url: str, path: str, block: int = 3200, headers: dict | None = None) -> tuple[list[dict], int]:
    """Events of streaming a file's 16-bit PCM in ``block``-byte messages, and the close code."""
    data, rate = sf.read(path, dtype="int16")
    pcm = data.tobytes()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url.replace("http", "ws") + "/stream", headers=headers or {}) as ws:
            await ws.send_json({"type": "start", "sample_rate": rate})
            events = [await ws.receive_json()]
            for i in range(0, len(pcm), block):
                await ws.send_bytes(pcm[i : i + block])
            await ws.send_json({"type": "end"})
            events += [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            return events, ws.close_code


def finals(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "final"]


def test_a_stream_gives_the_finals_of_asr_stream_in_any_block_size(served, trained_tiny):
    model_path, _, rates = trained_tiny
    wav = rates.utterances[0].key
    cli = run_cli("stream", str(model_path), "--input", wav, "--no-realtime", "--json", "--device", "cpu")
    expected = finals([json.loads(line) for line in cli.stdout.splitlines()])
    assert expected and expected[0]["text"] == rates.utterances[0].hypothesis
    for block in (3200, 333):  # an odd size splits samples across messages
        events, code = asyncio.run(stream_file(served.url, wav, block))
        assert events[0] == {"type": "ready", "protocol": 1, "sample_rate": 8000}
        seconds = sf.info(wav).frames / 8000
        assert finals(events) == expected and events[-1] == {"type": "end", "seconds": seconds} and code == Close.done


def test_concurrent_streams_each_get_their_own_words(served, trained_tiny):
    rates = trained_tiny[2]
    wavs = [u.key for u in rates.utterances[:4]]

    async def all_at_once():
        return await asyncio.gather(*(stream_file(served.url, w, 1600) for w in wavs))

    for (events, code), utterance in zip(asyncio.run(all_at_once()), rates.utterances):
        assert " ".join(e["text"] for e in finals(events)) == utterance.hypothesis and code == Close.done


def test_post_transcribe_gives_the_json_of_asr_transcribe(served, trained_tiny):
    model_path, _, rates = trained_tiny
    wav = rates.utterances[1].key
    cli = json.loads(run_cli("transcribe", str(model_path), wav, "--format", "json", "--device", "cpu").stdout)

    async def post():
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("audio", open(wav, "rb"), filename="take.wav")
            async with session.post(served.url + "/transcribe", data=form) as response:
                health = await (await session.get(served.url + "/health")).json()
                return response.status, await response.json(), health

    status, result, health = asyncio.run(post())
    assert status == 200 and result == cli | {"audio_filepath": "take.wav"}
    assert health["status"] == "ok" and health["protocol"] == 1 and health["streams"] == 0


def start(rate) -> str:
    return json.dumps({"type": "start", "sample_rate": rate})


async def ws_case(url: str, *messages, headers: dict) -> tuple[int, list]:
    """Send ``messages`` on a stream, read until the server closes: (close code, events)."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url.replace("http", "ws") + "/stream", headers=headers) as ws:
            for message in messages:
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
            events = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            return ws.close_code, events


def handshake_status(url: str, headers: dict) -> tuple[int, str]:
    async def go():
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url.replace("http", "ws") + "/stream", headers=headers):
                    return 101, ""
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status, exc.message
    return asyncio.run(go())


def test_bad_clients_get_their_close_code_and_the_server_keeps_serving(strict, served, trained_tiny, caplog):
    rates = trained_tiny[2]
    token = {"Authorization": "Bearer secret"}
    closes = {
        "garbage bytes first": (Close.unsupported, [b"\x00\xff" * 10]),
        "not a start": (Close.unsupported, ['{"type": "hello"}']),
        "text not json": (Close.unsupported, ["hello"]),
        "rate zero": (Close.unsupported, [start(0)]),
        "rate as text": (Close.unsupported, [start("8000")]),
        "rate absurd": (Close.unsupported, [start(10**9)]),
        "text mid-stream": (Close.unsupported, [start(8000), b"\x00" * 800, '{"type": "pause"}']),
        "message too big": (Close.too_big, [start(8000), b"\x00" * 5000]),
        "idle": (Close.idle, [start(8000)]),
        "stream too long": (Close.stream_too_long, [start(8000)] + [b"\x00" * 4000] * 33),  # 8.25 s
    }
    for name, (expected, messages) in closes.items():
        code, events = asyncio.run(ws_case(strict.url, *messages, headers=token))
        assert code == expected, name
        if name == "stream too long":
            assert events[-1] == {"type": "end", "seconds": 8.25}  # what was heard is sent before the close
    assert handshake_status(strict.url, {})[0] == 401
    assert handshake_status(strict.url, {"Authorization": "Bearer wrong"})[0] == 401
    assert handshake_status(strict.url, token | {"Origin": "http://evil.example"})[0] == 403
    assert handshake_status(served.url, {"Origin": served.url})[0] == 101  # the page's own origin

    async def one_too_many():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(strict.url.replace("http", "ws") + "/stream", headers=token):
                try:
                    async with session.ws_connect(strict.url.replace("http", "ws") + "/stream", headers=token):
                        return 101
                except aiohttp.WSServerHandshakeError as exc:
                    return exc.status
    assert asyncio.run(one_too_many()) == 503

    async def upload(data: bytes) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("audio", data, filename="../../etc/passwd")
            async with session.post(strict.url + "/transcribe", data=form, headers=token) as response:
                return response.status, response.reason
    assert asyncio.run(upload(b"\x00" * 30_000))[0] == 413
    status, reason = asyncio.run(upload(b"not audio at all"))
    # named as the client named it (the name is only echoed, never a path here)
    assert status == 400 and ": cannot read audio" in reason and "passwd" in reason and "asr-upload" not in reason
    wav = rates.utterances[0].key  # after all that, a good client is served as before
    assert " ".join(e["text"] for e in finals(asyncio.run(stream_file(strict.url, wav, headers=token))[0])) == \
        rates.utterances[0].hypothesis
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_asr_serve_from_the_command_line(trained_tiny):
    model_path = trained_tiny[0]
    port = free_port()
    env = os.environ | {"ASR_SERVE_TOKEN": "tok"}
    server = subprocess.Popen([sys.executable, "-m", "asr", "serve", str(model_path), "--port", str(port),
                               "--device", "cpu"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)

        async def get(path: str, headers: dict) -> int:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response:
                    return response.status
        assert asyncio.run(get("/health", {})) == 200
        assert asyncio.run(get("/", {})) == 200
        assert handshake_status(f"http://127.0.0.1:{port}", {})[0] == 401  # the token from the environment
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "serving on http://127.0.0.1:" in stderr and "Traceback" not in stderr
    bad = run_cli("serve", str(model_path), "--max-streams", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("asr: error: --max-streams")


class Recording(Server):
    """A server that keeps the audio its streams received, and that answers a stream's WebSocket
    handshake only after ``handshake_delay`` seconds, as a distant or busy one does."""

    def __init__(self, recognizer: Recognizer, handshake_delay: float = 0.0):
        super().__init__(recognizer)
        self.handshake_delay, self.received, self.rate = handshake_delay, bytearray(), 0

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        await asyncio.sleep(self.handshake_delay)
        return await super().stream(request)

    async def _start(self, ws: web.WebSocketResponse):
        session = await super()._start(ws)
        if session is not None:
            accept, self.rate = session.accept, session.rate
            session.accept = lambda data: (self.received.extend(data), accept(data))[1]
        return session

    def replayed_finals(self) -> str:
        """The final results of the audio received, streamed again here."""
        session = StreamSession(self.recognizer, self.rate, self.stream_options)
        events = session.accept(bytes(self.received)) + session.finish()
        return " ".join(e["text"] for e in events if e["type"] == "final" and e["text"])


def speech_after_a_pause(wav: str, out: pathlib.Path, seconds: float = 2.0) -> pathlib.Path:
    """``wav`` after ``seconds`` of its own background (its first 0.5 s, repeated): a person who
    starts speaking once the page listens. Chromium plays a fake microphone's file from the moment
    it opens the device, but with an audio server (PulseAudio) running the page's audio graph hears
    it only a second or two later: without the pause the first words would be gone before the page
    could hear them, whatever the page did."""
    data, rate = sf.read(wav, dtype="int16")
    quiet = data[: rate // 2]
    pause = np.tile(quiet, math.ceil(seconds * rate / len(quiet)))[: int(seconds * rate)]
    sf.write(out, np.concatenate([pause, data]), rate, subtype="PCM_16")
    return out


def browser_finals(url: str, wav: pathlib.Path, tmp_path: pathlib.Path) -> str:
    """Chromium, headless, with ``wav`` as its fake microphone, opens the page at ``url`` and
    starts listening: the final results the page shows."""
    profile = tempfile.mkdtemp(dir=tmp_path)
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         url + "/?autostart=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return asyncio.run(page_finals(pathlib.Path(profile) / "DevToolsActivePort", timeout=60))
    finally:
        browser.kill()
        browser.wait()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (tools/setup.sh)")
def test_the_page_transcribes_a_browser_microphone(recognizer, trained_tiny, tmp_path):
    """The page shows as final results exactly what the server recognized in the audio it got, and
    that audio holds the recording: its transcript is the offline one, give or take the word or
    two that a glitch of Chromium's fake microphone can cost (it drops or repeats a buffer now and
    then on 2 busy cores; the received audio, replayed, gives the same words as the page)."""
    utterance = trained_tiny[2].utterances[0]
    wav = speech_after_a_pause(utterance.key, tmp_path / "speech.wav")
    server = Recording(recognizer)
    running = Running(server)
    try:
        shown = browser_finals(running.url, wav, tmp_path)
    finally:
        running.stop()
    assert shown == server.replayed_finals()
    assert score([utterance.hypothesis], [shown]).utterances[0].word_errors <= 2, shown


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (tools/setup.sh)")
def test_the_page_keeps_what_it_hears_while_it_connects(recognizer, trained_tiny, tmp_path):
    """Audio heard while the connection is still opening (here 4.5 s) is sent once it is open, not
    dropped: the server gets the quiet before the speech, and so the speech from its start."""
    wav = speech_after_a_pause(trained_tiny[2].utterances[0].key, tmp_path / "speech.wav")
    server = Recording(recognizer, handshake_delay=4.5)
    running = Running(server)
    try:
        assert browser_finals(running.url, wav, tmp_path)  # the page heard and showed something
    finally:
        running.stop()
    samples = np.abs(np.frombuffer(bytes(server.received), dtype="<i2").astype(np.int32))
    frame = server.rate // 100
    loud = [i for i in range(0, len(samples) - frame, frame) if samples[i : i + frame].max() > 1000]
    # the file's speech starts 2.75 s in (2 s of pause, 0.75 s of the recording's own quiet); the
    # fake microphone may play up to a second or two before the page's graph hears it
    assert loud and loud[0] / server.rate > 1.0


async def page_finals(port_file: pathlib.Path, timeout: float) -> str:
    """The page's final results, read through the DevTools protocol once they stop changing."""
    deadline = time.monotonic() + timeout
    while not (port_file.exists() and port_file.read_text().strip()):
        assert time.monotonic() < deadline, "chromium did not start"
        await asyncio.sleep(0.1)
    port = port_file.read_text().split()[0]
    async with aiohttp.ClientSession() as session:
        pages = await (await session.get(f"http://127.0.0.1:{port}/json/list")).json()
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        async with session.ws_connect(url) as devtools:
            seen, steady = "", 0
            for request in range(int(timeout * 4)):
                await devtools.send_json({"id": request, "method": "Runtime.evaluate", "params": {
                    "expression": "document.getElementById('finals').innerText", "returnByValue": True}})
                value = (await devtools.receive_json())["result"]["result"].get("value", "")
                steady = steady + 1 if value and value == seen else 0
                if steady >= 8 or time.monotonic() > deadline:
                    break
                seen = value
                await asyncio.sleep(0.25)
            return " ".join(seen.split())


def test_hotwords_per_stream_and_per_upload(trained_tiny, served, tmp_path):
    from asr.decoding import decoding_options
    from asr.ngram import build_arpa

    model_path, manifest, rates = trained_tiny
    lm = build_arpa([u.reference for u in rates.utterances] * 3, 2, tmp_path / "lm.arpa")
    running = Running(Server(Recognizer.load(model_path, "cpu", decoding_options(lm=str(lm)))))
    wav = rates.utterances[0].key
    data, rate = sf.read(wav, dtype="int16")

    async def stream(url: str, hotwords) -> tuple[int, list]:
        return await ws_case(url, json.dumps({"type": "start", "sample_rate": rate, "hotwords": hotwords}),
                             data.tobytes(), '{"type": "end"}', headers={})

    async def post(hotwords: str) -> tuple[int, dict | str]:
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("hotwords", hotwords)
            form.add_field("audio", open(wav, "rb"), filename="take.wav")
            async with session.post(running.url + "/transcribe", data=form) as response:
                return response.status, (await response.json()) if response.status == 200 else response.reason

    try:
        plain_code, plain = asyncio.run(stream(running.url, []))
        code, biased = asyncio.run(stream(running.url, ["yes 3", "ness"]))  # a word no one says
        assert plain_code == code == Close.done and finals(biased) == finals(plain) and finals(plain)
        assert asyncio.run(stream(running.url, {"yes": "loud"}))[0] == Close.unsupported
        status, result = asyncio.run(post("yes 3\nness\n"))
        assert status == 200 and result["text"] == " ".join(e["text"] for e in finals(plain))
        status, reason = asyncio.run(post("new york\n"))
        assert status == 400 and reason == "hotwords: 'new york': the boost must be a number"
    finally:
        running.stop()
    # the greedy server has no LM to bias: the stream is refused with the reason
    assert asyncio.run(ws_case(served.url, json.dumps({"type": "start", "sample_rate": rate, "hotwords": ["yes"]}),
                               headers={}))[0] == Close.unsupported
