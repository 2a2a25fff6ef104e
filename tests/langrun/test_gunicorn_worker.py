"""langrun.gunicorn_worker: a process answers as a sync worker does, and a request that parks gives its turn away."""

import errno
import logging
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from gunicorn import util as gunicorn_util

from langrun import gunicorn_worker
from langrun.gunicorn_worker import ParkingWorker, headers_arrived
from langrun.waits import PARKING, parked


@pytest.fixture
def worker(monkeypatch):
    """The worker's accounting alone, without a server: new answering threads are counted, not started."""
    worker = ParkingWorker.__new__(ParkingWorker)
    worker.alive = True
    worker.cfg = SimpleNamespace(is_ssl=False)
    worker.log = logging.getLogger("test.gunicorn")
    monkeypatch.setattr(PARKING, "on_park", None)  # put back after the test: prepare() sets it
    worker.prepare()
    worker.started = []
    worker.handled = []
    monkeypatch.setattr(worker, "_answer_in_new_thread", lambda: worker.started.append(threading.current_thread()))
    monkeypatch.setattr(worker, "handle", lambda listener, client, addr: worker.handled.append(client))
    return worker


def _pair(sent: bytes = b"", *, close: bool = False):
    server, client = socket.socketpair()
    if sent:
        client.sendall(sent)
    if close:
        client.close()
    return server, client


def test_a_request_that_parks_gives_its_turn_to_a_new_thread_once(worker):
    def request():
        worker._turn.held = True
        with parked():
            pass
        with parked():  # a stream parks between its reads: its turn went at the first
            pass
        assert worker._turn.held is False

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    assert worker.started == [thread]


def test_a_thread_without_a_turn_gives_nothing_when_it_parks(worker):
    with parked():
        pass
    assert worker.started == []


def test_a_stopping_process_starts_no_thread_for_a_parked_request(worker):
    worker.alive = False
    worker._turn.held = True
    with parked():
        pass
    assert worker.started == [] and worker._turn.held is False


def test_a_request_whose_headers_came_with_it_is_answered_on_its_turn(worker):
    server, _client = _pair(b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    worker._turn.held = True
    worker._serve(None, server, ("127.0.0.1", 1))
    assert worker.handled == [server] and worker.started == [] and worker._turn.held is True


def test_a_connection_whose_headers_are_late_parks_and_is_answered_once_they_are_in(worker):
    server, client = _pair(b"POST /api/v1/webhook/greet HTTP/1.1\r\n")
    worker._turn.held = True
    threading.Timer(0.1, lambda: client.sendall(b"Host: x\r\n\r\n")).start()
    worker._serve(None, server, ("127.0.0.1", 1))
    assert worker.handled == [server] and len(worker.started) == 1 and worker._slow_starts == 0


def test_a_connection_whose_headers_are_late_waits_on_the_turn_once_the_process_has_parked_its_share(worker):
    worker._slow_starts = gunicorn_worker.SLOW_STARTS
    server, client = _pair(b"POST /api/v1/webhook/greet HTTP/1.1\r\n")
    worker._turn.held = True
    threading.Timer(0.1, lambda: client.sendall(b"Host: x\r\n\r\n")).start()
    worker._serve(None, server, ("127.0.0.1", 1))
    assert worker.handled == [server] and worker.started == [] and worker._turn.held is True


def test_a_burst_of_connections_parks_while_their_headers_arrive(worker):
    pairs = [_pair() for _ in range(gunicorn_worker.SLOW_STARTS)]
    worker._turn.held = True
    serving = []
    for server, _client in pairs:
        thread = threading.Thread(target=worker._serve, args=(None, server, ("127.0.0.1", 1)))
        thread.start()
        serving.append(thread)
    for _server, client in pairs:
        client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
    for thread in serving:
        thread.join(5)
    assert len(worker.handled) == len(pairs) and worker._slow_starts == 0


def test_a_connection_that_trickles_its_headers_is_closed(worker, monkeypatch):
    monkeypatch.setattr(gunicorn_worker, "HEADERS_TIMEOUT", 0.2)
    server, _client = _pair(b"POST /api/v1/webhook/greet HTTP/1.1\r\nX-Drip: ")
    worker._serve(None, server, ("127.0.0.1", 1))
    assert worker.handled == [] and server.fileno() == -1 and worker._slow_starts == 0


def test_headers_are_looked_at_without_being_taken():
    complete, _c1 = _pair(b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert headers_arrived(complete, timeout=1) is True
    assert complete.recv(4) == b"POST"  # gunicorn's parser still reads it all
    trickling, _c2 = _pair(b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: x\r\nX-Drip: ")
    assert headers_arrived(trickling, timeout=0.2) is False
    silent, _c3 = _pair()
    assert headers_arrived(silent, timeout=0.1) is False
    assert headers_arrived(silent, timeout=0) is False
    gone, _ = _pair(b"POST / HTT", close=True)
    assert headers_arrived(gone, timeout=0.2) is False
    closed, _ = _pair(close=True)
    assert headers_arrived(closed, timeout=0.2) is True  # gunicorn's parser sees the end of the connection


def test_a_thread_that_cannot_accept_stops_the_process_and_gives_its_connections_back(worker, monkeypatch):
    # As a sync worker does on an accept error other than "nothing to take": the process exits and the arbiter
    # starts another.
    closed = []

    class Failing:
        def accept(self):
            raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(worker, "_ready_listeners", lambda: [Failing()])
    monkeypatch.setattr(gunicorn_worker.connections, "close_all", lambda: closed.append(True))
    thread = threading.Thread(target=worker._answer)
    worker._threads.add(thread)
    thread.start()
    thread.join(5)
    assert worker.alive is False and closed == [True] and worker._threads == set()


def _answered(worker) -> tuple[socket.socket, socket.socket]:
    """A TCP connection as the worker holds it once its answer is written (the server's end, the client's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        accepted, _ = listener.accept()
    server = gunicorn_worker._Client(accepted.family, accepted.type, accepted.proto, fileno=accepted.detach())
    server.worker = worker
    server.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    return server, client


def _closed_gracefully(worker, server) -> float:
    """gunicorn's close after an answer, on a thread that holds a turn: how long it took."""
    worker._turn.held = True
    started = time.monotonic()
    worker.handle = lambda listener, client, addr: gunicorn_util.close_graceful(client)
    worker._serve(None, server, ("127.0.0.1", 1))
    return time.monotonic() - started


def test_a_client_that_closes_after_its_answer_is_closed_on_the_turn(worker):
    server, client = _answered(worker)
    client.recv(1024)
    client.close()
    assert _closed_gracefully(worker, server) < 1
    assert worker.started == [] and worker._turn.held is True and worker._lingering == 0


def test_a_client_that_keeps_its_end_open_gets_the_close_waited_for_off_the_turn(worker):
    server, client = _answered(worker)
    seen = []
    # Looked at while the close waits for the client: the turn has gone to a new thread.
    threading.Timer(0.3, lambda: (seen.append((len(worker.started), worker._lingering)), client.close())).start()
    # The close still waits for the client, on this thread (measured from a moment after the timer started).
    assert _closed_gracefully(worker, server) >= 0.25
    assert seen == [(1, 1)]
    assert worker._turn.held is False and worker._lingering == 0


def test_past_its_share_of_waiting_closes_a_process_closes_at_once(worker):
    worker._lingering = gunicorn_worker.LINGERING
    server, client = _answered(worker)
    assert _closed_gracefully(worker, server) < gunicorn_worker.LINGER_GRACE + 0.5
    assert worker.started == [] and worker._turn.held is True and worker._lingering == gunicorn_worker.LINGERING
    assert client.recv(1024).startswith(b"HTTP/1.1 200 OK") and client.recv(1024) == b""  # the answer, then the end


def test_where_a_close_cannot_be_told_from_data_the_wait_stays_on_the_turn(worker, monkeypatch):
    monkeypatch.setattr(gunicorn_worker, "POLLRDHUP", 0)  # not Linux
    server, client = _answered(worker)
    threading.Timer(0.3, client.close).start()  # from before the close's clock starts: allow it the difference
    assert _closed_gracefully(worker, server) >= 0.2
    assert worker.started == [] and worker._turn.held is True and worker._lingering == 0


def test_a_thread_that_cannot_be_started_is_not_waited_for(worker, monkeypatch):
    class Unstartable(threading.Thread):
        def start(self):
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(gunicorn_worker.threading, "Thread", Unstartable)
    with pytest.raises(RuntimeError):
        ParkingWorker._answer_in_new_thread(worker)
    assert worker._threads == set()
