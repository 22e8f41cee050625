"""A reverse proxy on loopback, as users put one before a WebUI started with --subpath.

`http://127.0.0.1:PORT/<prefix>/x` is served by `<upstream>/x`, the way a proxy set up for
--subpath strips the prefix (nginx `location /prefix/ { proxy_pass http://upstream/; }`).
Bodies stream both ways (Gradio 4's server-sent events), websockets are relayed (Gradio 3's
queue), and the browser's Host header is kept, as Gradio builds its URLs from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import aiohttp
from aiohttp import web

#: Headers a proxy must not pass on (hop-by-hop), and the length, which aiohttp sets itself (bodies
#: pass through as they are, compressed or not).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length"}


SESSION = web.AppKey("session", aiohttp.ClientSession)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Proxy:
    """Serves `/<prefix>/...` from `upstream` (an "http://host:port" URL) while the context is open."""

    def __init__(self, upstream: str, prefix: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.prefix = "/" + prefix.strip("/")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}{self.prefix}"
        #: (method, path) of every request relayed, for tests that check where the page's calls went
        self.requests: list[tuple[str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        if not request.path.startswith(self.prefix + "/") and request.path != self.prefix:
            return web.Response(status=404, text=f"not under {self.prefix}/")
        path = request.path_qs[len(self.prefix):] or "/"
        self.requests.append((request.method, path))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = "http"
        headers["X-Forwarded-Prefix"] = self.prefix
        if request.headers.get("upgrade", "").lower() == "websocket":
            return await self._relay_websocket(request, path, headers)
        session: aiohttp.ClientSession = request.app[SESSION]
        async with session.request(request.method, self.upstream + path, headers=headers,
                                   data=request.content if request.body_exists else None,
                                   allow_redirects=False, auto_decompress=False) as reply:
            answer = web.StreamResponse(status=reply.status, reason=reply.reason)
            for key, value in reply.headers.items():
                if key.lower() in HOP_BY_HOP:
                    continue
                if key.lower() == "location" and value.startswith("/"):
                    value = self.prefix + value  # a redirect of the app's own is one of ours
                answer.headers.add(key, value)
            await answer.prepare(request)
            async for chunk in reply.content.iter_any():
                await answer.write(chunk)
            await answer.write_eof()
            return answer

    async def _relay_websocket(self, request: web.Request, path: str, headers: dict[str, str]) -> web.WebSocketResponse:
        browser = web.WebSocketResponse()
        await browser.prepare(request)
        session: aiohttp.ClientSession = request.app[SESSION]
        headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
        async with session.ws_connect("ws" + self.upstream[len("http"):] + path, headers=headers) as server:

            async def pump(source, sink) -> None:
                async for message in source:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(message.data)
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(message.data)
                    else:
                        break
                await sink.close()

            await asyncio.gather(pump(browser, server), pump(server, browser), return_exceptions=True)
        return browser

    @contextlib.contextmanager
    def running(self) -> Iterator[Proxy]:
        ready = threading.Event()
        stop: list[asyncio.Event] = []

        async def main() -> None:
            app = web.Application(client_max_size=512 * 1024 * 1024)
            app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
            app.router.add_route("*", "/{tail:.*}", self._relay)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            stop.append(asyncio.Event())
            ready.set()
            await stop[0].wait()
            await runner.cleanup()
            await app[SESSION].close()
            # streams still open (Gradio 4's heartbeat) end here, not when the interpreter exits
            rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self._loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        if not ready.wait(30):
            raise RuntimeError("the test proxy did not start")
        try:
            yield self
        finally:
            self._loop.call_soon_threadsafe(stop[0].set)
            thread.join(30)
            self._loop.close()
