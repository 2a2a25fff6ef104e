"""Database helpers shared by the hot paths that read rows with hand-written SQL."""

from django.db import connection


def loaded_instance(model, **values):
    """An instance of `model` as if loaded from the database with only these fields (by attname).

    The other fields are deferred: reading one loads it with a query of its own, so code that
    needs more than the hot path selected still gets the right value.
    """
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])
