"""``asr serve``: live transcription over WebSocket, file transcription over HTTP, a browser page.

One loaded :class:`asr.transcribe.Recognizer` serves every client. Model work runs on one
inference thread (torch uses the cores itself); each stream hands it one block at a time and
waits for the events before reading its next message, so the queue takes the streams in turn
and a client that floods or stalls only holds up itself.

Protocol (``PROTOCOL``, docs/SERVER.md): the client's first message is JSON ``{"type": "start",
"sample_rate": R}`` (optionally ``"hotwords"``: words its beam search should favour); the server
answers ``{"type": "ready", "protocol": 1, "sample_rate": R}``; then binary messages of 16-bit
little-endian mono PCM at R Hz, answered with the events of ``asr stream --json`` (``{"type":
"partial"|"final", "text", "start", "end"}``); the client sends ``{"type": "end"}`` and receives
the last final, then ``{"type": "end", "seconds": S}`` (the audio it received), and the server
closes (1000). Refusals: HTTP 401 (token), 403 (origin), 503 (streams at the limit) before the
upgrade; after it, close codes :class:`Close`, each with a one-line reason.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
from aiohttp import WSMsgType, web

from asr.audio import RATE_RANGE
from asr.errors import AsrError, DecodingError
from asr.hotwords import parse_hotwords, parse_hotwords_text
from asr.outputs import to_json
from asr.sources import Pcm16, StreamResampler
from asr.transcribe import Recognizer

log = logging.getLogger(__name__)

PROTOCOL = 1
BIASED_CACHE = 16  # recognizers kept for recent hotword lists
T = TypeVar("T")


class Close(IntEnum):
    """WebSocket close codes the server sends (RFC 6455 ones, and 4xxx of its own)."""

    done = 1000  # after {"type": "end"}
    unsupported = 1003  # a first message that is not a start, text that is not an end, audio before start
    too_big = 1009  # a message over the limit (aiohttp closes with it)
    failed = 1011  # the recognizer failed on this stream (logged)
    stream_too_long = 4001  # more audio than --max-stream-seconds (the words so far come first)
    idle = 4002  # nothing received for --idle-seconds


@dataclass(frozen=True)
class Limits:
    max_streams: int = 8
    max_message_bytes: int = 1 << 20
    max_stream_seconds: float = 3600.0
    max_upload_bytes: int = 100 << 20
    idle_seconds: float = 30.0


class StreamSession:
    """One client's stream: PCM bytes at its rate in, events out (an odd byte waits for its pair)."""

    def __init__(self, recognizer: Recognizer, sample_rate: int, stream_options: dict):
        self.streamer = recognizer.streamer(**stream_options)
        self.resampler = StreamResampler(sample_rate, recognizer.sample_rate)
        self.pcm, self.rate, self.samples = Pcm16(), sample_rate, 0

    @property
    def seconds(self) -> float:
        return self.samples / self.rate

    def accept(self, data: bytes) -> list[dict]:
        samples = self.pcm.decode(data)
        self.samples += len(samples)
        return [e.as_dict() for e in self.streamer.accept(self.resampler.accept(samples))]

    def finish(self) -> list[dict]:
        tail = self.resampler.accept(np.zeros(0, dtype=np.float32), final=True)
        events = self.streamer.accept(tail) + self.streamer.finish()
        return [e.as_dict() for e in events]


class Server:
    def __init__(self, recognizer: Recognizer, limits: Limits = Limits(), token: str | None = None,
                 origins: tuple[str, ...] = (), stream_options: dict | None = None):
        self.recognizer, self.limits, self.token = recognizer, limits, token
        self.origins = set(origins)  # besides the page's own (the Host the request was sent to)
        self.stream_options = stream_options or {}
        self.streams = 0
        self.inference = ThreadPoolExecutor(1, thread_name_prefix="asr-inference")
        self.biased: OrderedDict[tuple, Recognizer] = OrderedDict()  # recognizers by hotwords, most recent last

    def recognizer_for(self, hotwords: object) -> Recognizer:
        """The recognizer, or one whose beam search favours ``hotwords`` (a request's field:
        ["word", "word boost", ...] or {"word": boost}); raises AsrError for bad ones."""
        if not hotwords:
            return self.recognizer
        if not isinstance(hotwords, (list, dict)):
            raise DecodingError("hotwords: a list of 'word [boost]' strings or an object {word: boost}")
        key = tuple(sorted(parse_hotwords(hotwords).items()))
        if key not in self.biased:
            self.biased[key] = self.recognizer.with_hotwords(dict(key))
            if len(self.biased) > BIASED_CACHE:
                self.biased.popitem(last=False)
        self.biased.move_to_end(key)
        return self.biased[key]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_upload_bytes + (1 << 16))
        app.add_routes([web.get("/", self.page), web.get("/worklet.js", self.page), web.get("/health", self.health),
                        web.get("/stream", self.stream), web.post("/transcribe", self.transcribe)])
        app.on_shutdown.append(lambda _: asyncio.to_thread(self.inference.shutdown))
        return app

    async def run(self, function: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.inference, function, *args)

    # -- checks --------------------------------------------------------------------------------
    def check(self, request: web.Request) -> None:
        """Bearer token (header, or ``?token=`` for browsers' WebSockets) and Origin."""
        if self.token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                raise web.HTTPUnauthorized(reason="a valid bearer token is required")
        origin = request.headers.get("Origin")  # browsers always send it; other clients need not
        if origin is not None and origin not in self.origins | {f"{request.scheme}://{request.host}"}:
            raise web.HTTPForbidden(reason=f"origin {origin} is not allowed (--allow-origin)")

    # -- routes --------------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        name, kind = ("worklet.js", "text/javascript") if request.path.endswith(".js") else ("index.html", "text/html")
        return web.Response(text=resources.files("asr").joinpath("web", name).read_text(), content_type=kind)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "protocol": PROTOCOL, "streams": self.streams,
                                  "max_streams": self.limits.max_streams, "sample_rate": self.recognizer.sample_rate})

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        self.check(request)
        if self.streams >= self.limits.max_streams:
            raise web.HTTPServiceUnavailable(reason=f"{self.streams} streams already (--max-streams)")
        ws = web.WebSocketResponse(max_msg_size=self.limits.max_message_bytes, heartbeat=30)
        self.streams += 1  # before the handshake's await: two at the limit cannot both get in
        try:
            await ws.prepare(request)
            await self._serve(ws)
        except ConnectionResetError:  # the client hung up while its events were being sent
            log.info("a client went away mid-stream")
        except Exception:  # one broken stream must not take the server with it
            log.exception("stream failed")
            await ws.close(code=Close.failed, message=b"internal error")
        finally:
            self.streams -= 1
        return ws

    async def transcribe(self, request: web.Request) -> web.Response:
        """A multipart upload (field ``audio``; before it, optionally ``hotwords``: 'word [boost]'
        lines) -> the JSON of ``asr transcribe --format json``."""
        self.check(request)
        if request.content_type != "multipart/form-data":
            raise web.HTTPBadRequest(reason="send the audio as multipart/form-data, field 'audio'")
        hotwords = ""
        async for part in await request.multipart():
            if part.name == "hotwords":  # before the audio: 'word [boost]' lines
                hotwords = await part.text()
            elif part.name == "audio":
                with tempfile.NamedTemporaryFile(prefix="asr-upload-") as tmp:  # never a name from the request
                    size = 0
                    while chunk := await part.read_chunk():
                        size += len(chunk)
                        if size > self.limits.max_upload_bytes:
                            raise web.HTTPRequestEntityTooLarge(self.limits.max_upload_bytes, size)
                        tmp.write(chunk)
                    tmp.flush()
                    try:
                        recognizer = await self.run(self.recognizer_for, parse_hotwords_text(hotwords))
                        result = await self.run(recognizer.transcribe, Path(tmp.name))
                    except AsrError as exc:  # the message names the upload as the client named it
                        raise web.HTTPBadRequest(reason=str(exc).replace(tmp.name, part.filename or "upload")) from None
                return web.json_response(to_json(result) | {"audio_filepath": part.filename or "upload"})
        raise web.HTTPBadRequest(reason="no 'audio' field in the form")

    # -- one stream ----------------------------------------------------------------------------
    async def _serve(self, ws: web.WebSocketResponse) -> None:
        session = await self._start(ws)
        if session is None:
            return
        while True:
            try:
                message = await ws.receive(timeout=self.limits.idle_seconds)
            except asyncio.TimeoutError:
                await ws.close(code=Close.idle, message=f"nothing received for {self.limits.idle_seconds:g} s".encode())
                return
            if message.type == WSMsgType.BINARY:
                for event in await self.run(session.accept, message.data):
                    await ws.send_json(event)
                if session.seconds > self.limits.max_stream_seconds:
                    await self._end(ws, session, Close.stream_too_long,
                                    f"stream longer than {self.limits.max_stream_seconds:g} s (--max-stream-seconds)")
                    return
            elif message.type == WSMsgType.TEXT and _json(message.data).get("type") == "end":
                await self._end(ws, session, Close.done, "")
                return
            elif message.type == WSMsgType.TEXT:
                await ws.close(code=Close.unsupported, message=b'expected PCM audio or {"type": "end"}')
                return
            else:  # closed by the client, or an error aiohttp already answered (e.g. 1009 too big)
                return

    async def _start(self, ws: web.WebSocketResponse) -> StreamSession | None:
        """The start message -> a session; or a close with the reason."""
        try:
            message = await ws.receive(timeout=self.limits.idle_seconds)
        except asyncio.TimeoutError:
            await ws.close(code=Close.idle, message=b"no start message")
            return None
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None
        start = _json(message.data) if message.type == WSMsgType.TEXT else {}
        rate = start.get("sample_rate")
        if start.get("type") != "start":
            reason = 'first message must be {"type": "start", "sample_rate": <Hz>}'
        elif not isinstance(rate, int) or isinstance(rate, bool) or not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            reason = f"sample_rate={rate!r}: must be a whole number of Hz in {RATE_RANGE[0]}-{RATE_RANGE[1]}"
        else:
            try:
                recognizer = await self.run(self.recognizer_for, start.get("hotwords"))
            except AsrError as exc:
                await ws.close(code=Close.unsupported, message=str(exc)[:120].encode())
                return None
            session = await self.run(StreamSession, recognizer, rate, self.stream_options)
            await ws.send_json({"type": "ready", "protocol": PROTOCOL, "sample_rate": rate})
            return session
        await ws.close(code=Close.unsupported, message=reason.encode())
        return None

    async def _end(self, ws: web.WebSocketResponse, session: StreamSession, code: Close, reason: str) -> None:
        for event in await self.run(session.finish):
            await ws.send_json(event)
        await ws.send_json({"type": "end", "seconds": round(session.seconds, 3)})  # audio received
        await ws.close(code=code, message=reason.encode())


def _json(text: str | bytes) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def serve(server: Server, host: str, port: int) -> None:
    """Run until Ctrl-C."""
    log.info("serving on http://%s:%d (page /, WebSocket /stream, POST /transcribe, GET /health)", host, port)
    web.run_app(server.app(), host=host, port=port, print=None, access_log=None)
