"""Django's PostgreSQL backend with a health check that costs no round trip while the connection is fine.

Django checks a persistent connection (CONN_HEALTH_CHECKS) with a `SELECT 1` at
the first query of every request or task: under load that round trip was about a
quarter of a web worker's time. A server that ends a session (restart,
`pg_terminate_backend`, an idle timeout) first sends its error and closes the
socket, so an idle connection with nothing to read is alive; only when the
socket has something to read (or psycopg already knows the connection is
broken) is the `SELECT 1` run, which decides as before.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        # poll(), not select(): select() refuses descriptors numbered 1024 or more, which a process with
        # many open files hands out, and every connection would then look broken and be reopened.
        poller = select.poll()
        try:
            poller.register(connection.fileno(), select.POLLIN)
            events = poller.poll(0)
        except (OSError, ValueError):
            return False
        if not events:
            return True
        return super().is_usable()
