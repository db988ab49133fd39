"""A real local HTTP endpoint for webhooks out: it records every request and answers
what the test queued (204 unless told), or hangs past the sender's timeout."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Mapping

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

HANG = "hang"


@dataclasses.dataclass
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic()


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: collections.deque = collections.deque()
        self.default: tuple[int, str, Mapping[str, str]] = (204, "", {})
        self._release = threading.Event()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks/tenure"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()

    def answer(self, status: int, body: str = "", headers: Mapping[str, str] | None = None):
        """Answer the next request so (queued answers first, then the default)."""
        self.answers.append((status, body, headers or {}))

    def always(self, status: int, body: str = "", headers: Mapping[str, str] | None = None):
        self.default = (status, body, headers or {})

    def hang(self) -> None:
        self.answers.append(HANG)

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]

    def _app(self, environ, start_response):
        request = Request(environ)
        self.received.append(
            Received(
                {k.lower(): v for k, v in request.headers.items()},
                request.get_data(),
                time.monotonic(),
            )
        )
        answer = self.answers.popleft() if self.answers else self.default
        if answer == HANG:
            self._release.wait(5)
            answer = (204, "", {})
        status, body, headers = answer
        return Response(body, status=status, headers=dict(headers))(environ, start_response)


def closed_port_url() -> str:
    """An address where nothing listens: connecting is refused at once."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/tenure"
