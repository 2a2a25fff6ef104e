"""gunicorn's sync worker, with threads for the requests that park.

A sync worker answers one request at a time, in one thread, and takes the next connection only when it is done: no
hand-off between threads, and connections left to the processes that are free. langrun's requests that wait for a
run or stream its events park (langrun.waits.parked): they hold a thread, but no CPU and no database connection.
In this worker a process answers `worker_connections` requests at once (WEB_THREADS), each on a thread of its own
that accepts and answers as a sync worker does; a request that parks gives its turn to a new thread, which goes on
accepting, and finishes on its own thread, no longer counted. So do a new connection whose headers are late and a
client slow to close its end after the answer. The main thread only tells the arbiter the process is alive, and
ends it.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time

from django.db import connections
from gunicorn import util
from gunicorn.workers.sync import SyncWorker

from langrun.waits import PARKING

# A new connection's request headers should come with it; one whose headers are not all in at once parks while they
# arrive (at most this many per process; past them a connection waits on the thread's turn), and is closed when they
# are not all in within HEADERS_TIMEOUT seconds, so slow clients cannot hold the threads that answer for long.
HEADERS_TIMEOUT = 5.0
SLOW_STARTS = 64
# The most read (without taking it) to find the end of a request's headers; longer headers go to gunicorn's parser.
MAX_HEADERS = 65536
# After an answer gunicorn half-closes the connection and reads until the client closes its end too (up to 2 s), so
# that request bytes left unread do not turn the close into a reset that could cut the answer short. A client that
# keeps its end open would hold the thread's turn all that time: when it has not closed within LINGER_GRACE seconds,
# the turn goes to a new thread and the close goes on uncounted (at most LINGERING per process; past them the close
# does not wait for the client).
LINGER_GRACE = 0.005
LINGERING = 64


class ParkingWorker(SyncWorker):
    def run(self):
        for listener in self.sockets:
            listener.setblocking(False)
        self.prepare()
        for _ in range(max(self.cfg.worker_connections, 1)):
            self._answer_in_new_thread()
        while self.alive and self.is_parent_alive():
            self.notify()
            time.sleep(min(self.timeout or 1.0, 1.0) / 2)
        self._stop()

    def prepare(self) -> None:
        """The worker's own state, before its first thread answers."""
        self._turn = threading.local()  # whether this thread's requests count as answered (it holds a turn)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._slow_starts = 0
        self._lingering = 0
        PARKING.on_park = self._give_turn

    def _answer_in_new_thread(self) -> None:
        thread = threading.Thread(target=self._answer, daemon=True, name="langrun-web")
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the process stops (its caller's thread fails), without waiting for this one
            with self._lock:
                self._threads.discard(thread)
            raise

    def _give_turn(self) -> None:
        # Called on the thread of a request that parks: its turn goes to a new thread, and it finishes uncounted.
        if getattr(self._turn, "held", False):
            self._turn.held = False
            if self.alive:
                self._answer_in_new_thread()

    def _answer(self) -> None:
        self._turn.held = True
        try:
            while self.alive and self._turn.held:
                for listener in self._ready_listeners():
                    try:
                        client, addr = listener.accept()
                    except OSError as e:
                        if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                            raise
                        continue
                    client = _Client(client.family, client.type, client.proto, fileno=client.detach())
                    client.worker = self
                    client.setblocking(True)
                    util.close_on_exec(client)
                    self._serve(listener, client, addr)
                    break
        except Exception:
            self.log.exception("A web thread failed; the process stops")
            self.alive = False
        finally:
            connections.close_all()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _ready_listeners(self):
        try:
            ready, _, _ = select.select(self.sockets, [], [], 1.0)
        except OSError as e:
            if e.errno in (errno.EINTR, errno.EBADF):
                return []
            raise
        return ready

    def _serve(self, listener, client, addr) -> None:
        if not self.cfg.is_ssl and not headers_arrived(client, timeout=0) and not self._headers_awaited(client):
            client.close()
            return
        try:
            self.handle(listener, client, addr)
        finally:
            if getattr(self._turn, "lingering", False):
                self._turn.lingering = False
                with self._lock:
                    self._lingering -= 1

    def linger(self, client: socket.socket) -> None:
        """Called when gunicorn has half-closed a connection after its answer, before it waits for the client's end."""
        if not POLLRDHUP or not getattr(self._turn, "held", False):
            return  # where a client's close cannot be told from its data, gunicorn's wait stays on the turn
        if self._lingering < LINGERING and peer_closed(client, timeout=LINGER_GRACE):
            return
        with self._lock:  # the share is taken here, where it is counted
            room = self._lingering < LINGERING
            self._lingering += room
        if not room:
            client.shutdown(socket.SHUT_RD)  # gunicorn's wait then reads what is left and closes
            return
        self._turn.lingering = True
        self._give_turn()

    def _headers_awaited(self, client) -> bool:
        """Whether a connection's late headers arrive in time: parked while they do, within the process's share of
        such connections; past it, on this thread's turn."""
        with self._lock:
            slow = self._slow_starts < SLOW_STARTS
            self._slow_starts += slow
        if not slow:
            return headers_arrived(client, timeout=HEADERS_TIMEOUT)
        try:
            with PARKING.parked():
                return headers_arrived(client, timeout=HEADERS_TIMEOUT)
        finally:
            with self._lock:
                self._slow_starts -= 1

    def _stop(self) -> None:
        # Requests being answered or parked get the graceful timeout to end; the process then exits without them.
        self.alive = False
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return
            threads[0].join(max(0.0, deadline - time.monotonic()))


class _Client(socket.socket):
    """A client connection that tells its worker when gunicorn half-closes it after the answer."""

    __slots__ = ("worker",)

    def shutdown(self, how):
        super().shutdown(how)
        if how == socket.SHUT_WR:
            self.worker.linger(self)


# Linux's poll flag for "the other end has closed": a close is told apart from data still coming.
POLLRDHUP = getattr(select, "POLLRDHUP", 0)


def peer_closed(sock: socket.socket, *, timeout: float) -> bool:
    """Whether the other end has closed (or reset) the connection, or does so within `timeout` seconds."""
    poller = select.poll()
    poller.register(sock.fileno(), POLLRDHUP)
    return bool(poller.poll(timeout * 1000))


def headers_arrived(sock: socket.socket, *, timeout: float) -> bool:
    """Whether the request headers on a new connection have all arrived within `timeout` seconds (read without being
    taken from the socket). A closed connection, or more than a request's headers may hold, counts as arrived:
    gunicorn's parser answers them as usual."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        if poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            try:
                seen = sock.recv(MAX_HEADERS, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                seen = b"..."
            except OSError:
                return True
            if not seen or b"\r\n\r\n" in seen or len(seen) >= MAX_HEADERS:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
