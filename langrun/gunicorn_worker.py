"""gunicorn's threaded worker, counting only the requests it is answering, not those that are parked.

A gthread process takes a new connection while it has fewer than `worker_connections`. langrun's requests that
wait for a run or stream its events park (langrun.waits.parked): they hold a thread, but no CPU and no database
connection. This worker counts a parked request (and a connection still sending its headers) out, so a
process with parked requests goes on taking as many requests to answer as one without; it has threads for them
(langrun/gunicorn_conf.py). A process whose requests being answered are at the limit leaves new connections to the
other processes, as a sync worker does.
"""

from __future__ import annotations

import socket
import time

from gunicorn.workers import gthread

from langrun.waits import PARKING

# The most read (without taking it) to find the end of a request's headers; longer headers go to gunicorn's parser.
MAX_HEADERS = 65536


def _wake() -> None:
    """Nothing: the main loop, woken, looks again at whether it may take connections."""


class ParkingThreadWorker(gthread.ThreadWorker):
    @property
    def worker_connections(self) -> int:
        # The limit the main loop compares its connections with: the requests it may answer at once, plus those
        # parked (at most the threads kept for them) and those waiting in the poller for their first bytes.
        parked = min(PARKING.count, self.cfg.threads - self._answering)
        return self._answering + parked + len(getattr(self, "pending_conns", ()))

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._answering = value

    def run(self):
        # A request that parks wakes the main loop, which then takes connections again at once (not at its next
        # tick, up to a second later).
        PARKING.on_park = lambda: self.method_queue.defer(_wake)
        super().run()

    def handle(self, conn):
        # A new connection is not being answered until its request's headers are all in: parked while the thread
        # waits for them. One whose first bytes do not come soon goes back to gunicorn's poller; one that trickles
        # its headers for longer than that is closed, so slow clients cannot hold the threads that answer.
        if not conn.initialized and not self.cfg.is_ssl:
            with PARKING.parked():
                arrived = headers_arrived(conn, timeout=gthread.DEFAULT_WORKER_DATA_TIMEOUT)
            if arrived is None:
                return gthread._DEFER
            if not arrived:
                # Closed at once: gunicorn's graceful close would wait on its main loop for the client to finish.
                conn.close()
                return False
        return super().handle(conn)


def headers_arrived(conn, *, timeout: float) -> bool | None:
    """Whether the connection's request headers have all arrived within `timeout` seconds (read without being taken
    from the socket); None when nothing at all arrived. A closed connection, or more than a request's headers may
    hold, counts as arrived: gunicorn's parser answers them as usual."""
    deadline = time.monotonic() + timeout
    if not conn.wait_for_data(timeout):
        return None
    while True:
        try:
            seen = conn.sock.recv(MAX_HEADERS, socket.MSG_PEEK)
        except BlockingIOError:
            seen = b"..."
        except OSError:
            return True
        if not seen or b"\r\n\r\n" in seen or len(seen) >= MAX_HEADERS:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
