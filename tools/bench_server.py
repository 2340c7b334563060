"""`asr serve` under load: word latency, CPU and dropped audio of concurrent real-time streams.

    python tools/bench_server.py MODEL MANIFEST [--streams 8] [--ramp 1,2,4,8,12] [--seconds 30]
                                 [--soak-minutes 10 --soak-streams 4]

Starts `asr serve MODEL` on a free port, then runs clients that each stream their own recording at
real-time pace (100 ms blocks): utterances of MANIFEST joined with 0.8 s pauses, at least
``--seconds`` long. For every word of the final results that aligns with a word of the offline
transcription of the same utterances (whose end times are known), two latencies from when its last
audio had been sent: until a word first showed at its place in a partial or final result ("shown")
and until it first showed spelled as the final spells it ("final"). Also: the
server's CPU (of all cores), dropped audio (seconds sent minus the seconds the server's end message
says it received) and whether the finals equal those of `asr stream` on the same recording
(computed here, not in real time). ``--ramp`` runs each count of streams in turn and reports the
most whose p95 word latency stays within 1 s. ``--soak-minutes`` keeps ``--soak-streams`` streams
going that long (recordings on repeat) and reports the server's resident memory at the start and
the end and any error.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.audio import load_audio  # noqa: E402
from asr.data import read_manifest  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402

BLOCK_SECONDS = 0.1
PAUSE_SECONDS = 0.8


@dataclass
class Recording:
    pcm: bytes  # 16-bit little-endian at the model's rate, as sent
    word_ends: list[float]  # seconds, offline transcription
    words: list[str]
    finals: list[str]  # of asr stream on the same samples


@dataclass
class StreamResult:
    latencies: list[float] = field(default_factory=list)  # until shown as the final spells it
    shown: list[float] = field(default_factory=list)  # until a word was shown at its place
    finals: list[str] = field(default_factory=list)
    received: float = 0.0  # seconds of audio the server says it received
    sent: float = 0.0
    close_code: int | None = None


def recordings(recognizer: Recognizer, manifest: str, count: int, seconds: float) -> list[Recording]:
    """``count`` recordings of at least ``seconds``, each from its own utterances."""
    utts, rate, made, next_utt = read_manifest(manifest), recognizer.sample_rate, [], 0
    pause = np.zeros(int(PAUSE_SECONDS * rate), np.float32)
    for _ in range(count):
        parts, ends, words, length = [pause], [], [], len(pause)
        while length < seconds * rate:
            utt = utts[next_utt % len(utts)]
            next_utt += 1
            samples = load_audio(utt.audio_filepath, rate).numpy()
            result = recognizer.transcribe(samples, sample_rate=rate)
            ends += [length / rate + w.end for w in result.words]
            words += [w.word for w in result.words]
            parts += [samples, pause]
            length += len(samples) + len(pause)
        pcm = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2")
        audio = pcm.astype(np.float32) / 32768.0  # what the server makes of the PCM
        finals = [e.text for e in recognizer.stream([audio], rate) if e.type == "final" and e.text]
        made.append(Recording(pcm.tobytes(), ends, words, finals))
    return made


async def run_stream(url: str, recording: Recording, rate: int, repeat_until: float = 0.0,
                     headers: dict | None = None) -> StreamResult:
    """Stream a recording at real-time pace; latencies of the words of its finals."""
    pcm = recording.pcm
    block = int(BLOCK_SECONDS * rate) * 2
    result, seen = StreamResult(), {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url + "/stream", headers=headers or {}) as ws:
            await ws.send_json({"type": "start", "sample_rate": rate})
            await ws.receive_json()
            start = time.monotonic()

            async def send() -> None:
                position = 0
                while True:
                    for i in range(0, len(pcm), block):
                        await asyncio.sleep(max(0.0, start + (position + i + block) / 2 / rate - time.monotonic()))
                        await ws.send_bytes(pcm[i : i + block])
                    position += len(pcm)
                    result.sent = position / 2 / rate
                    if time.monotonic() >= repeat_until:
                        break
                await ws.send_json({"type": "end"})

            sender = asyncio.create_task(send())
            async for message in ws:
                event = json.loads(message.data)
                if event["type"] in ("partial", "final"):
                    note_words(event, time.monotonic() - start, result, seen)
                elif event["type"] == "end":
                    result.received = event["seconds"]
            await sender
            result.close_code = ws.close_code
    sent_at = [(int(end / BLOCK_SECONDS) + 1) * BLOCK_SECONDS for end in recording.word_ends]
    # times are known for the offline words: the final words that align with them are timed
    matcher = difflib.SequenceMatcher(None, " ".join(result.finals).split(), recording.words, autojunk=False)
    pairs = [(block.a + j, block.b + j) for block in matcher.get_matching_blocks() for j in range(block.size)]
    result.latencies = [seen[k] - sent_at[i] for k, i in pairs]
    result.shown = [seen[("any", k)] - sent_at[i] for k, i in pairs]
    return result


def note_words(event: dict, now: float, result: StreamResult, seen: dict) -> None:
    """When each word of the stream's finals first showed: ``seen[k]`` as the final spells it,
    ``seen[("any", k)]`` spelled any way (a partial's word at its place, later corrected)."""
    first = sum(len(text.split()) for text in result.finals)  # words finalized before this segment
    words = event["text"].split()
    pending = seen.setdefault("segment", {})
    for j, word in enumerate(words):
        pending.setdefault((j, word), now)
        pending.setdefault(j, now)
    if event["type"] == "final":
        for j, word in enumerate(words):
            seen[first + j] = pending.get((j, word), now)
            seen[("any", first + j)] = pending.get(j, now)
        seen["segment"] = {}
        if event["text"]:
            result.finals.append(event["text"])


def percentile(values: list[float], q: float) -> float:
    return values[round(q / 100 * (len(values) - 1))] if values else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime in clock ticks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load_run(url: str, pid: int, recs: list[Recording], rate: int) -> dict:
    cpu, wall = cpu_seconds(pid), time.monotonic()
    results = await asyncio.gather(*(run_stream(url, r, rate) for r in recs))
    cpu, wall = cpu_seconds(pid) - cpu, time.monotonic() - wall
    latencies = sorted(x for r in results for x in r.latencies)
    shown = sorted(x for r in results for x in r.shown)
    return {"streams": len(recs), "words": len(latencies), "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95), "shown p50": percentile(shown, 50), "shown p95": percentile(shown, 95),
            "cpu": 100 * cpu / wall,
            "dropped": max(0.0, round(sum(r.sent - r.received for r in results), 2)),  # the server rounds to ms
            "identical": sum(r.finals == rec.finals for r, rec in zip(results, recs)),
            "closes": sorted({r.close_code for r in results})}


def start_server(model: str, options: tuple[str, ...] = ("--max-streams", "64")) -> tuple[subprocess.Popen, str]:
    """`asr serve MODEL OPTIONS` on a free port, once it accepts connections: (process, URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "asr", "serve", model, "--port", str(port), "--device", "cpu",
                               *options], stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("asr serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--ramp", default="", help="comma-separated stream counts, e.g. 1,2,4,8,12")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each stream's recording")
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--soak-streams", type=int, default=4)
    args = parser.parse_args()
    counts = [int(n) for n in args.ramp.split(",")] if args.ramp else [args.streams]
    recognizer = Recognizer.load(args.model, device="cpu")
    recs = recordings(recognizer, args.manifest, max(counts + [args.soak_streams]), args.seconds)
    server, url = start_server(args.model)
    print(f"command: {' '.join(sys.argv)}")
    print(f"{'streams':>7} {'words':>6} {'shown p50/p95 s':>16} {'final p50/p95 s':>16} {'CPU %':>6} {'dropped s':>9} "
          f"{'identical':>9} closes")
    try:
        for n in counts:
            r = asyncio.run(load_run(url, server.pid, recs[:n], recognizer.sample_rate))
            shown, final = f"{r['shown p50']:.2f}/{r['shown p95']:.2f}", f"{r['p50']:.2f}/{r['p95']:.2f}"
            print(f"{n:>7} {r['words']:>6} {shown:>16} {final:>16} {r['cpu']:>6.0f} {r['dropped']:>9.3f} "
                  f"{r['identical']:>5} of {n} {r['closes']}", flush=True)
        if args.soak_minutes:
            soak(url, server.pid, recs[: args.soak_streams], recognizer.sample_rate, args.soak_minutes)
    finally:
        server.terminate()
        _, log = server.communicate(timeout=60)
    errors = sum("ERROR" in line or "Traceback" in line for line in log.splitlines())
    print(f"server log lines at ERROR or with a traceback: {errors}")


def soak(url: str, pid: int, recs: list[Recording], rate: int, minutes: float) -> None:
    start_rss = rss_mib(pid)
    until = time.monotonic() + 60 * minutes
    async def all_streams() -> list:
        streams = asyncio.gather(*(run_stream(url, r, rate, repeat_until=until) for r in recs), return_exceptions=True)
        return await asyncio.wait_for(streams, timeout=60 * minutes + 120)

    results = asyncio.run(all_streams())
    errors = [r for r in results if isinstance(r, BaseException)]
    print(f"soak: {len(recs)} streams for {minutes:g} min: server RSS {start_rss:.0f} MiB at the start, "
          f"{rss_mib(pid):.0f} MiB at the end; {len(errors)} client errors; close codes "
          f"{sorted({r.close_code for r in results if not isinstance(r, BaseException)})}")


if __name__ == "__main__":
    main()
