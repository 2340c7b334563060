"""`asr serve` against 50 misbehaving clients while a good client streams in real time.

    python tools/bench_server_bad_clients.py MODEL MANIFEST

Starts `asr serve MODEL --token T` with small limits, starts one good real-time stream, then runs
the cases one after another: each must get its documented close code or HTTP status
(docs/SERVER.md). At the end the good stream's finals must equal `asr stream`'s on the same audio,
the server must report no open streams, and its log must hold no line at ERROR and no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_server import recordings, run_stream, start_server  # noqa: E402

from asr.data import read_manifest  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = ["--max-streams", "4", "--max-message-kb", "64", "--max-stream-seconds", "90", "--idle-seconds", "2",
          "--max-upload-mb", "1"]


def start(rate) -> str:
    return json.dumps({"type": "start", "sample_rate": rate})


async def ws(url: str, *messages, headers: dict = AUTH, drop_after: bool = False, close_after: bool = False
             ) -> int | str:
    """Send ``messages`` on a stream (a float: wait that long), then read until the server closes;
    the close code, or the HTTP status of a refused handshake. ``drop_after``: cut the connection
    without a close frame ("dropped"); ``close_after``: close it properly from this side."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url.replace("http", "ws") + "/stream", headers=headers) as sock:
                for message in messages:
                    if isinstance(message, float):
                        await asyncio.sleep(message)
                    else:
                        await (sock.send_bytes(message) if isinstance(message, bytes) else sock.send_str(message))
                if drop_after:
                    sock._conn.transport.abort()  # the TCP connection just goes, no close frame
                    return "dropped"
                if close_after:
                    await sock.close()
                async for _ in sock:
                    pass
                return sock.close_code
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def post(url: str, form: aiohttp.FormData | bytes, headers: dict = AUTH) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/transcribe", data=form, headers=headers) as response:
            return response.status


def upload(data: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("audio", data, filename="x.wav")
    return form


def cases(url: str, wav: bytes) -> list[tuple[str, int | str, object]]:
    """(name, expected code or status, coroutine factory)."""
    pcm = b"\x01\x00" * 8000  # half a second of near-silence at 16 kHz
    c: list = []
    for size in (1, 2, 17, 1000, 10_000, 60_000):
        c.append((f"garbage {size} bytes first", 1003, lambda s=size: ws(url, b"\xff" * s)))
    for text in ("{}", "[]", '"start"', '{"type": "begin"}', '{"type": "start"}', '{"type": "end"}', "null", "hello"):
        c.append((f"first message {text}", 1003, lambda t=text: ws(url, t)))
    for rate in (0, -8000, 999, 1_000_001, 16000.5, "16000", True, None):
        c.append((f"sample_rate {rate!r}", 1003, lambda r=rate: ws(url, start(r))))
    short = pcm[:8000]  # a quarter second: 8,000 one-byte messages are enough
    for size in (1, 3, 7, 333, 4097, 65_535):
        blocks = [short[i : i + size] for i in range(0, len(short), size)]
        c.append((f"blocks of {size} bytes", 1000, lambda b=blocks: ws(url, start(16000), *b, '{"type": "end"}')))
    c.append(("binary message of 64 KiB + 1", 1009, lambda: ws(url, start(16000), b"\x00" * 65_537)))
    c.append(("binary message of 1 MiB", 1009, lambda: ws(url, start(16000), b"\x00" * (1 << 20))))
    c.append(("start message of 70 KB", 1009, lambda: ws(url, json.dumps({"type": "start", "pad": "x" * 70_000}))))
    c.append(("hang up after the start", "dropped", lambda: ws(url, start(16000), drop_after=True)))
    c.append(("hang up mid-audio", "dropped", lambda: ws(url, start(16000), pcm, 0.3, drop_after=True)))
    c.append(("close without an end message", 1000, lambda: ws(url, start(16000), pcm, close_after=True)))
    c.append(("never-ending audio", 4001, lambda: ws(url, start(16000), *[pcm] * 184)))  # 92 s, the limit 90
    c.append(("start, then silence on the wire", 4002, lambda: ws(url, start(16000))))
    c.append(("never a start", 4002, lambda: ws(url)))
    c.append(("no token", 401, lambda: ws(url, start(16000), headers={})))
    c.append(("wrong token", 401, lambda: ws(url, start(16000), headers={"Authorization": "Bearer nope"})))
    c.append(("no token, upload", 401, lambda: post(url, upload(wav), headers={})))
    c.append(("wrong origin", 403, lambda: ws(url, start(16000), headers=AUTH | {"Origin": "http://evil.example"})))
    c.append(("origin null", 403, lambda: ws(url, start(16000), headers=AUTH | {"Origin": "null"})))
    c.append(("wrong origin, upload", 403, lambda: post(url, upload(wav), headers=AUTH | {"Origin": "http://e.example"})))
    c.append(("text mid-stream", 1003, lambda: ws(url, start(16000), pcm, '{"type": "pause"}')))
    c.append(("a second start", 1003, lambda: ws(url, start(16000), pcm, start(16000))))
    c.append(("upload over 1 MB", 413, lambda: post(url, upload(b"\x00" * (1 << 20 | 1)))))
    c.append(("upload not audio", 400, lambda: post(url, upload(b"not audio"))))
    c.append(("upload without the audio field", 400, lambda: post(url, aiohttp.FormData({"file": "x"}))))
    c.append(("upload not multipart", 400, lambda: post(url, b"raw bytes")))
    c.append(("one stream too many", 503, lambda: too_many(url)))
    return c


async def too_many(url: str) -> int:
    """Hold streams up to the limit (the good one is open too): the next is refused."""
    async with aiohttp.ClientSession() as session:
        health = await (await session.get(url + "/health")).json()
        free = health["max_streams"] - health["streams"]
        held = [await session.ws_connect(url.replace("http", "ws") + "/stream", headers=AUTH) for _ in range(free)]
        status = await ws(url, start(16000))
        for sock in held:
            await sock.close()
        return status


async def run(url: str, good, rate: int, wav: bytes) -> int:
    good_stream = asyncio.create_task(run_stream(url, good, rate, headers=AUTH))
    failures = 0
    for name, expected, make in cases(url, wav):
        got = await make()
        failures += got != expected
        print(f"{'ok ' if got == expected else 'BAD'} {name:<40} expected {expected!s:<8} got {got}", flush=True)
    result = await good_stream
    print(f"good stream alongside: finals {'identical to' if result.finals == good.finals else 'DIFFERENT from'} "
          f"asr stream's; {result.sent - result.received:.3f} s of audio dropped")
    async with aiohttp.ClientSession() as session:
        health = await (await session.get(url + "/health")).json()
    print(f"open streams afterwards: {health['streams']}")
    return failures + (result.finals != good.finals) + (health["streams"] != 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    args = parser.parse_args()
    recognizer = Recognizer.load(args.model, device="cpu")
    if recognizer.sample_rate != 16000:
        sys.exit("this run's cases send 16 kHz audio: give a 16 kHz model")
    good = recordings(recognizer, args.manifest, 1, 60.0)[0]
    wav = Path(read_manifest(args.manifest)[0].audio_filepath).read_bytes()  # for the uploads
    server, url = start_server(args.model, ("--token", TOKEN, *LIMITS))
    print(f"command: {' '.join(sys.argv)}")
    try:
        failures = asyncio.run(run(url, good, recognizer.sample_rate, wav))
    finally:
        server.terminate()
        _, log = server.communicate(timeout=60)
    bad_lines = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]
    for line in bad_lines:
        print("  " + line)
    print(f"server log: {len(log.splitlines())} lines, {len(bad_lines)} at ERROR or with a traceback")
    sys.exit(1 if failures or bad_lines else 0)


if __name__ == "__main__":
    main()
