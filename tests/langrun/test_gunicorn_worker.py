"""langrun.gunicorn_worker: a process counts the requests it answers, not the parked ones."""

import threading
from collections import deque
from types import SimpleNamespace

from langrun.gunicorn_worker import ParkingThreadWorker
from langrun.waits import PARKING, parked


def _worker(*, answering: int, threads: int) -> ParkingThreadWorker:
    worker = ParkingThreadWorker.__new__(ParkingThreadWorker)  # the accounting alone, without a server
    worker.cfg = SimpleNamespace(threads=threads)
    worker.worker_connections = answering
    worker.pending_conns = deque()
    return worker


def test_parked_requests_and_connections_waiting_for_their_first_bytes_do_not_count():
    worker = _worker(answering=2, threads=10)
    assert worker.worker_connections == 2
    with parked(), parked(), parked():
        assert worker.worker_connections == 2 + 3
        worker.pending_conns.append(object())
        assert worker.worker_connections == 2 + 3 + 1
    assert worker.worker_connections == 2 + 1


def test_parked_requests_count_out_only_as_many_as_the_threads_kept_for_them():
    worker = _worker(answering=2, threads=4)
    release = threading.Event()
    holders = [threading.Thread(target=lambda: _park_until(release)) for _ in range(5)]
    for holder in holders:
        holder.start()
    try:
        _until(lambda: PARKING.count == 5)
        assert worker.worker_connections == 4  # 2 answered + the 2 threads left; more would queue for a thread
    finally:
        release.set()
        for holder in holders:
            holder.join()
    assert PARKING.count == 0


def test_a_request_that_parks_wakes_the_process_main_loop():
    woken = []
    PARKING.on_park = lambda: woken.append(True)
    try:
        with parked():
            assert woken == [True]
    finally:
        PARKING.on_park = None


def _park_until(event: threading.Event) -> None:
    with parked():
        event.wait(10)


def _until(predicate, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _connection(sent: bytes = b"", *, close: bool = False):
    import socket

    from gunicorn.workers.gthread import TConn

    server, client = socket.socketpair()
    if sent:
        client.sendall(sent)
    if close:
        client.close()
    return TConn(SimpleNamespace(), server, ("127.0.0.1", 1), ("127.0.0.1", 2)), client


def test_a_request_is_answered_once_its_headers_are_all_in_and_not_while_they_trickle():
    from langrun.gunicorn_worker import headers_arrived

    complete, _c1 = _connection(b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert headers_arrived(complete, timeout=1) is True
    assert complete.sock.recv(4) == b"POST"  # only looked at: gunicorn's parser still reads it all
    trickling, _c2 = _connection(b"POST /api/v1/webhook/greet HTTP/1.1\r\nHost: x\r\nX-Drip: ")
    assert headers_arrived(trickling, timeout=0.2) is False  # closed by the worker: it holds no thread that answers
    silent, _c3 = _connection()
    assert headers_arrived(silent, timeout=0.1) is None  # nothing yet: back to gunicorn's poller
    gone, _ = _connection(b"POST / HTT", close=True)
    assert headers_arrived(gone, timeout=0.2) is False
    closed, _ = _connection(close=True)
    assert headers_arrived(closed, timeout=0.2) is True  # gunicorn's parser sees the end of the connection
