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

from django.db.backends.postgresql import base
from django.db.backends.postgresql.base import Database

from langrun.db import connection_quiet


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if self.pool is None:
            return connection
        # Pooled connections the server may have ended (a restart ends them all): a round trip decides for one that
        # has something to say, and a broken one goes back to the pool, which discards it, for the next.
        for _ in range(self.pool.max_size):
            if connection_quiet(connection):
                return connection
            try:
                connection.execute("")
            except Database.Error:
                self.pool.putconn(connection)
                connection = super().get_new_connection(conn_params)
            else:
                return connection
        return connection

    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed or self.connection.broken:
            return False
        return connection_quiet(self.connection) or super().is_usable()
