"""Database helpers: a pool of connections for a web process, and the instances the hot paths build from their rows."""

import functools
import select

from django.db import connection
from django.db.models import Model, signals
from django.db.models.base import ModelState


@functools.cache
def _attnames(model) -> frozenset[str]:
    return frozenset(f.attname for f in model._meta.concrete_fields)


def loaded_instance(model, **values):
    """An instance of `model` as if loaded from the database with only these fields (by attname).

    The other fields are deferred: reading one loads it with a query of its own, so code that
    needs more than the hot path selected still gets the right value.

    It is what `Model.from_db` builds, without running `Model.__init__` over every field of the
    model, which the hot paths would pay for fields they never read. A model with pre_init or
    post_init receivers, or its own `from_db`, goes the usual way so that they still run.
    """
    unknown = values.keys() - _attnames(model)
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    if (
        model.from_db.__func__ is not Model.from_db.__func__
        or signals.pre_init.has_listeners(model)
        or signals.post_init.has_listeners(model)
    ):
        names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
        return model.from_db(connection.alias, names, [values[name] for name in names])
    instance = model.__new__(model)
    state = instance._state = ModelState()
    state.adding = False
    state.db = connection.alias
    instance.__dict__.update(values)
    return instance


def connection_quiet(connection) -> bool:
    """Whether an open psycopg connection is fine without a round trip: nothing to read on its socket.

    A server that ends a session (restart, `pg_terminate_backend`, an idle timeout) first sends its error and
    closes the socket, so an idle connection with nothing to read is alive. poll(), not select(): select()
    refuses descriptors numbered 1024 or more, which a process with many open files hands out.
    """
    if connection.closed or connection.broken:
        return False
    poller = select.poll()
    try:
        poller.register(connection.fileno(), select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def connection_pool_use(*, size: int) -> None:
    """This process's threads share at most `size` PostgreSQL connections (Django's connection pool).

    For a web process, whose threads mostly wait (parked requests, langrun/waits.py): one connection per thread
    would be as many connections as threads. Called before the process's first query (gunicorn's post_fork); a
    forked process must not share its parent's pool, so nothing that forks uses one.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "langrun.db.postgresql" or size <= 0:
        return
    database["CONN_MAX_AGE"] = 0
    database["CONN_HEALTH_CHECKS"] = False  # the backend checks each connection the pool hands out, more cheaply
    database.setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": size, "timeout": 30}


def connection_give_back() -> None:
    """Give this thread's connection back to its process's pool (connection_pool_use) while the thread does something
    else for long: an event stream between its reads, a run executing in a web process while its nodes run. The next
    query takes one again. Without a pool, or inside a transaction, the connection is kept: opening one per use would
    cost more than holding it."""
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()
