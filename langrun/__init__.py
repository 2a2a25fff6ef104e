"""langrun: a self-hosted service that runs flows when their webhook URL is called."""

__version__ = "0.1.0"
