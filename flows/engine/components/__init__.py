"""Built-in components. Importing this package registers them."""

from flows.engine.components import core, data, http, respond  # noqa: F401
