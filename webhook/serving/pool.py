"""The application on pool threads, for the requests the loop does not answer itself.

A thread gets a parsed request and returns the bytes of its response; it never touches
a socket. The loop is woken through a pipe and sends the response. Bodies are handed to
threads while those being answered add up to at most ``inflight_bytes`` (one request
is always let through, so a maximum-size review is still answered): a decoded review
costs about nine times its size in Python objects.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from webhook.serving.connection import Connection, Phase
from webhook.serving.protocol import Request, refusal_bytes

Response = tuple[bytes, bool]


class AppPool:
    def __init__(
        self,
        threads: int,
        inflight_bytes: int,
        respond: Callable[[Connection, Request], Response],
        deliver: Callable[[Connection, Response], None],
        log: Any,
    ) -> None:
        self.threads = threads
        self.inflight_bytes = inflight_bytes
        self.respond = respond
        self.deliver = deliver
        self.log = log
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="app")
        self.queued: deque[Connection] = deque()
        self.waiting = 0  # bodies of queued requests
        self.decoding = 0  # bodies of requests being answered
        self.busy = 0
        self.finished: deque[tuple[Connection, int, Future[Response]]] = deque()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def submit(self, conn: Connection, request: Request) -> None:
        conn.request = request
        conn.phase = Phase.QUEUED
        self.queued.append(conn)
        self.waiting += len(request.body)
        self.dispatch()

    def cancel(self, conn: Connection) -> None:
        """``conn`` closes while queued."""
        self.queued.remove(conn)
        self.waiting -= len(conn.request.body) if conn.request else 0
        conn.request = None

    def dispatch(self) -> None:
        while self.queued and self.busy < self.threads:
            conn = self.queued[0]
            assert conn.request is not None
            size = len(conn.request.body)
            if self.decoding and self.decoding + size > self.inflight_bytes:
                break  # once a thread frees budget
            self.queued.popleft()
            self.waiting -= size
            self.decoding += size
            self.busy += 1
            conn.phase = Phase.BUSY
            request, conn.request = conn.request, None
            future = self.executor.submit(self.respond, conn, request)
            future.add_done_callback(self._done_callback(conn, size))

    def _done_callback(self, conn: Connection, size: int) -> Callable[[Future[Response]], None]:
        def done(future: Future[Response]) -> None:
            # In the pool thread: hand the response back and wake the loop.
            self.finished.append((conn, size, future))
            with contextlib.suppress(OSError):
                os.write(self.wake_w, b"\0")

        return done

    def on_wake(self, _fileobj: Any) -> None:
        """In the loop: send what the threads answered, then hand out more."""
        with contextlib.suppress(OSError):
            os.read(self.wake_r, 4096)
        while self.finished:
            conn, size, future = self.finished.popleft()
            self.busy -= 1
            self.decoding -= size
            try:
                response = future.result()
            except Exception:
                self.log.exception("answering a request failed")
                response = refusal_bytes(500), False
            self.deliver(conn, response)
        self.dispatch()

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        os.close(self.wake_r)
        os.close(self.wake_w)
