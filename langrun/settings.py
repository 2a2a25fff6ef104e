"""Settings for langrun, read from the environment.

The embedded default (no variables set) is SQLite plus django-q2's ORM broker.
Production sets DATABASE_URL (PostgreSQL) and REDIS_URL (django-q2's Redis broker).
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from langrun import waits
from langrun.config import environment_load, home_dir

BASE_DIR = Path(__file__).resolve().parent.parent
environment_load()  # `.env` in the current directory, and Langflow's names (langrun/config.py)
env = environ.Env()

# --- Core -------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY environment variable to a long random string "
            "(`make run` and `langrun serve` generate one for a local install in $LANGRUN_HOME/secret_key)."
        )
    SECRET_KEY = "django-insecure-debug-only-key"  # noqa: S105 - only ever used with DEBUG on
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The embedded profile's files (database, secret key, static files) live under LANGRUN_HOME, default ./var.
LANGRUN_HOME = home_dir()
DATA_DIR = Path(env.str("LANGRUN_DATA_DIR", default=str(LANGRUN_HOME)))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "langrun",
    "flows",  # before django_q: its `qcluster` command (flows/management/commands/qcluster.py) takes precedence
    "webhooks",
    "django_q",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "langrun.middleware.ChunkedBodyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Outside the guard, so that its refusals are counted and framed like any other answer.
    "flows.metrics.WebhookMetricsMiddleware",
    "langrun.middleware.NulGuardMiddleware",
]

ROOT_URLCONF = "langrun.urls"
WSGI_APPLICATION = "langrun.wsgi.application"
AUTH_USER_MODEL = "langrun.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `collectstatic` copies the admin's files here; whitenoise serves them (also under gunicorn with DEBUG off).
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(LANGRUN_HOME / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Database ---------------------------------------------------------------
# Connections are kept open (with health checks): a new PostgreSQL connection
# costs far more than the queries a webhook makes.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'langrun.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The same backend, with a health check that skips the `SELECT 1` round trip while the socket is quiet.
    DATABASES["default"]["ENGINE"] = "langrun.db.postgresql"
    # Parameters bound by the server, and a statement run this many times on a connection is prepared there:
    # PostgreSQL then plans it once per connection instead of on every execution: planning the webhook's
    # key + flow join costs more than running it. 0 turns preparing off (needed behind a PgBouncer
    # older than 1.21 in transaction mode).
    _prepare_threshold = env.int("LANGRUN_DB_PREPARE_THRESHOLD", default=5)
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=_prepare_threshold if _prepare_threshold > 0 else None
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes share the file: WAL lets readers and a writer
    # work together, IMMEDIATE transactions take the write lock up front (no
    # lock upgrade that fails with "database is locked"), and a busy timeout
    # makes writers wait for each other instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    if DATABASES["default"]["NAME"] != ":memory:":
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

# --- Background runs (django-q2) ---------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
LANGRUN_RUN_TIMEOUT = env.int("LANGRUN_RUN_TIMEOUT", default=300)
Q_CLUSTER = {
    "name": env.str("LANGRUN_CLUSTER_NAME", default="langrun"),
    "workers": env.int("LANGRUN_WORKERS", default=2),
    "timeout": LANGRUN_RUN_TIMEOUT,
    # Must exceed timeout, or django-q2 hands a slow task to a second worker.
    "retry": LANGRUN_RUN_TIMEOUT + 60,
    # The run ledger records every outcome; django-q2's own copies would be redundant writes.
    "save_limit": -1,
    "ack_failures": True,
    "max_attempts": 1,
    "catch_up": False,
    "label": "Background tasks",
    # A worker is replaced after this many tasks (django-q2's default, 500, re-forked each worker and
    # opened a new database connection every few seconds under load); it bounds slow leaks still.
    "recycle": env.int("LANGRUN_WORKER_RECYCLE", default=5000),
}
# Runs of one account each worker process keeps in flight at once (flows/services/inflight.py): runs that wait on the
# network (HTTPRequest, LanguageModel) overlap on one event loop; the account's further runs wait in the process
# until one of them ends. The process keeps LANGRUN_RUN_CONCURRENCY_RESERVE more slots for other accounts' runs, so
# that one account's runs waiting long on the network never leave the others none; when all are taken it takes no
# further task and the queue keeps the rest. An in-flight run costs some tens of kB and one socket; the database sees
# one connection per process.
LANGRUN_RUN_CONCURRENCY = env.int("LANGRUN_RUN_CONCURRENCY", default=500)
LANGRUN_RUN_CONCURRENCY_RESERVE = env.int("LANGRUN_RUN_CONCURRENCY_RESERVE", default=max(LANGRUN_RUN_CONCURRENCY // 10, 1))
# `qcluster` lowers its CPU priority (and its workers') by this much (os.nice) so that, on a machine it
# shares with gunicorn, accepting webhooks should come first and runs take the CPU the web leaves (a virtual
# machine's scheduler may not oblige: README, "Production and scaling out"); 0 leaves it alone. Niceness only
# matters when processes compete for a core: a worker-only host loses nothing.
LANGRUN_WORKER_NICE = env.int("LANGRUN_WORKER_NICE", default=19)
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
    # The pusher takes up to `bulk` waiting tasks per round trip to Redis (flows/broker.py), and hands
    # up to `queue_limit` to the workers: fewer round trips and wake-ups per run while there is a backlog.
    Q_CLUSTER["broker_class"] = "flows.broker.BulkRedis"
    Q_CLUSTER["bulk"] = env.int("LANGRUN_QUEUE_BULK", default=30)
    Q_CLUSTER["queue_limit"] = env.int("LANGRUN_QUEUE_LIMIT", default=16)
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "flows.health.KeptStatsORM"
    Q_CLUSTER["poll"] = env.float("LANGRUN_ORM_POLL", default=0.2)
# /health_check answers 503 when no worker cluster has reported for this many seconds (a cluster reports twice a second).
LANGRUN_HEALTH_WORKER_TIMEOUT = env.int("LANGRUN_HEALTH_WORKER_TIMEOUT", default=60)
# Seconds the pusher waits for more tasks when it found some, but fewer than `bulk` (flows/broker.py); 0: never.
LANGRUN_QUEUE_LINGER = env.float("LANGRUN_QUEUE_LINGER", default=0.03)

# --- langrun ----------------------------------------------------------------
LANGRUN_WEBHOOK_AUTH = env.bool("LANGRUN_WEBHOOK_AUTH", default=True)
# A key's last_used_at/use_count are written at most once per this many seconds per process (0: every use).
LANGRUN_API_KEY_USAGE_INTERVAL = env.float("LANGRUN_API_KEY_USAGE_INTERVAL", default=10)
LANGRUN_MAX_BODY_BYTES = env.int("LANGRUN_MAX_BODY_BYTES", default=1024 * 1024)
# Deepest nesting of objects and arrays accepted in a JSON body (webhook payloads, API bodies, /run's input_value):
# deeper values could be stored but not read back (Python's JSON encoder and renderers recurse).
LANGRUN_MAX_JSON_DEPTH = env.int("LANGRUN_MAX_JSON_DEPTH", default=100)
# Largest flow export file accepted by the import (API upload and admin page).
LANGRUN_MAX_IMPORT_BYTES = env.int("LANGRUN_MAX_IMPORT_BYTES", default=10 * 1024 * 1024)
# Queued runs whose last enqueue is older than this are enqueued again by the sweep.
LANGRUN_REQUEUE_AFTER = env.int("LANGRUN_REQUEUE_AFTER", default=60)
# Resuming a paused flow rings for this many held runs in the request; a background task rings the rest, a page each
# time its turn in the queue comes (behind the page before: other accounts' runs wait behind a page, not the backlog).
LANGRUN_RELEASE_BATCH = env.int("LANGRUN_RELEASE_BATCH", default=500)
# Bulk replay (flows/services/replays.py): replays created per transaction (a background task each, which rings for
# the next behind them in the queue), at most this many per second.
LANGRUN_REPLAY_BATCH = env.int("LANGRUN_REPLAY_BATCH", default=100)
LANGRUN_REPLAY_RATE = env.float("LANGRUN_REPLAY_RATE", default=100.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = LANGRUN_MAX_BODY_BYTES
# How long `POST /api/v1/run/{flow}` may block before answering 202 with the run id (the run goes on).
# Both waits hold a parked web thread (capped by LANGRUN_WAITS_PER_PROCESS and LANGRUN_WAITS_PER_USER below).
LANGRUN_SYNC_RUN_TIMEOUT = env.float("LANGRUN_SYNC_RUN_TIMEOUT", default=20.0)
# Event streams (`/run?stream=true`, `/runs/{id}/events`, `/webhook-events/{flow}`) read the run ledger every
# LANGRUN_STREAM_POLL seconds, send a keep-alive after LANGRUN_STREAM_KEEPALIVE quiet seconds (which is also how soon
# a client that went away is noticed) and end after LANGRUN_STREAM_LIFETIME seconds (a client reconnects).
LANGRUN_STREAM_POLL = env.float("LANGRUN_STREAM_POLL", default=0.25)
LANGRUN_STREAM_KEEPALIVE = env.float("LANGRUN_STREAM_KEEPALIVE", default=15.0)
LANGRUN_STREAM_LIFETIME = env.float("LANGRUN_STREAM_LIFETIME", default=3600.0)
# The most a webhook caller may ask to wait with `?wait=<seconds>`.
LANGRUN_WEBHOOK_MAX_WAIT = env.float("LANGRUN_WEBHOOK_MAX_WAIT", default=20.0)
# A caller that waits (`?wait=`, the synchronous run) holds a thread of its web process meanwhile (parked: no database
# connection, not counted among the requests being answered): at most this many such callers per web process, and
# per account in a process; a caller past either is answered at once with the run's 202 (it was accepted; its status
# URL tells when it is done).
LANGRUN_WAITS_PER_PROCESS = env.int("LANGRUN_WAITS_PER_PROCESS", default=waits.WAITS_PER_PROCESS)
LANGRUN_WAITS_PER_USER = env.int("LANGRUN_WAITS_PER_USER", default=waits.WAITS_PER_USER)
# An open event stream holds a parked thread too, for as long as its client listens: at most this many per web
# process, and per account in a process; a client past either gets 429 with Retry-After (an EventSource comes back).
LANGRUN_STREAMS_PER_PROCESS = env.int("LANGRUN_STREAMS_PER_PROCESS", default=waits.STREAMS_PER_PROCESS)
LANGRUN_STREAMS_PER_USER = env.int("LANGRUN_STREAMS_PER_USER", default=waits.STREAMS_PER_USER)

# --- Flow engine -------------------------------------------------------------
# Seconds a flow's run may take before it fails (a flow can set its own `timeout`).
LANGRUN_FLOW_TIMEOUT = env.int("LANGRUN_FLOW_TIMEOUT", default=120)
# Hosts (names or CIDRs) HTTPRequest and LanguageModel may reach although they are not public addresses.
LANGRUN_HTTP_ALLOWED_HOSTS = env.list("LANGRUN_HTTP_ALLOWED_HOSTS", default=[])
# The most bytes one node's outputs may take, written as JSON; a node producing more fails its run
# (Template and Extract stop while building). HTTP responses are read up to this size too. 0: no limit.
LANGRUN_MAX_OUTPUT_BYTES = env.int("LANGRUN_MAX_OUTPUT_BYTES", default=4 * 1024 * 1024)
# The most nodes a flow's graph may have, and the most edges (checked when it is saved). 0: no limit.
LANGRUN_MAX_FLOW_NODES = env.int("LANGRUN_MAX_FLOW_NODES", default=1000)
LANGRUN_WEB_RUNS_PER_PROCESS = env.int("LANGRUN_WEB_RUNS_PER_PROCESS", default=4)
LANGRUN_MAX_RUN_OUTPUT_BYTES = env.int("LANGRUN_MAX_RUN_OUTPUT_BYTES", default=64 * 1024 * 1024)
# Fernet keys of credential variables, comma-separated: the first encrypts, every one decrypts (rotate by putting
# a new key first, then `manage.py rotate_variables_key`). Derived from SECRET_KEY when unset.
LANGRUN_VARIABLES_KEY = env.str("LANGRUN_VARIABLES_KEY", default="")

# Python modules imported at start-up to register additional components (trusted code, set by the operator).
LANGRUN_COMPONENT_MODULES = env.list("LANGRUN_COMPONENT_MODULES", default=[])

# --- Reliability ---------------------------------------------------------------
# A `running` run whose attempt started more than its flow's timeout (capped by LANGRUN_RUN_TIMEOUT) + this many
# seconds ago lost its worker: the sweep queues it again, or fails it when no attempt is left.
LANGRUN_LEASE_MARGIN = env.int("LANGRUN_LEASE_MARGIN", default=60)
# Retryable failures wait base * 2^(attempt-1) seconds (capped, with full jitter) before the next attempt.
LANGRUN_RETRY_BACKOFF = env.float("LANGRUN_RETRY_BACKOFF", default=10.0)
LANGRUN_RETRY_BACKOFF_MAX = env.float("LANGRUN_RETRY_BACKOFF_MAX", default=600.0)
# How long a sender's Idempotency-Key / webhook-id keeps answering with the original run.
LANGRUN_IDEMPOTENCY_RETENTION = env.int("LANGRUN_IDEMPOTENCY_RETENTION", default=24 * 3600)
# After a signing secret is rotated, the previous one is still accepted for this long.
LANGRUN_SIGNING_SECRET_GRACE = env.int("LANGRUN_SIGNING_SECRET_GRACE", default=24 * 3600)
# Webhook requests per minute, per flow and per API key (0: no limit); counted in the shared cache.
LANGRUN_RATE_LIMIT_FLOW = env.int("LANGRUN_RATE_LIMIT_FLOW", default=0)
LANGRUN_RATE_LIMIT_KEY = env.int("LANGRUN_RATE_LIMIT_KEY", default=0)
# Schedules one account may have: each firing is a task in the queue every account and the sweep share.
LANGRUN_MAX_SCHEDULES_PER_USER = env.int("LANGRUN_MAX_SCHEDULES_PER_USER", default=100)

# --- Alerts and callbacks ------------------------------------------------------
# The address receivers reach this service at: the start of the `status_url` in alerts (none: the path alone).
LANGRUN_PUBLIC_URL = env.str("LANGRUN_PUBLIC_URL", default="")
# Attempts at one alert delivery before it is marked failed; between them base * 2^(attempt-1) seconds (at most an hour).
LANGRUN_ALERTS_MAX_ATTEMPTS = env.int("LANGRUN_ALERTS_MAX_ATTEMPTS", default=5)
LANGRUN_ALERTS_BACKOFF = env.float("LANGRUN_ALERTS_BACKOFF", default=10.0)
# Seconds one delivery attempt may take (connecting, sending and the answer) before it counts as failed.
LANGRUN_ALERTS_TIMEOUT = env.float("LANGRUN_ALERTS_TIMEOUT", default=5.0)
# E-mail alerts go through Django's mail settings: the console backend (the worker's log) unless set.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="langrun@localhost")

# The cache holds the rate-limit counters, so every process must share it: Redis in production,
# a database table (created by `migrate`) on the embedded default.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env.str("CACHE_URL", default=REDIS_URL)}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "langrun_cache"}}
CACHES["default"]["KEY_PREFIX"] = env.str("LANGRUN_CLUSTER_NAME", default="langrun")

# --- Operating: metrics and retention -------------------------------------------
# GET /metrics: "off" (404), "open", or any other value is the bearer token a scraper must send.
LANGRUN_METRICS = env.str("LANGRUN_METRICS", default="off").strip() or "off"
# Days to keep runs by outcome (cancelled runs count as failed), and their raw body and payload; 0 keeps forever.
LANGRUN_KEEP_SUCCEEDED_DAYS = env.int("LANGRUN_KEEP_SUCCEEDED_DAYS", default=30)
LANGRUN_KEEP_FAILED_DAYS = env.int("LANGRUN_KEEP_FAILED_DAYS", default=90)
LANGRUN_KEEP_PAYLOAD_DAYS = env.int("LANGRUN_KEEP_PAYLOAD_DAYS", default=30)
# django-q2's own records (failed tasks, stale broker rows) are kept this many days.
LANGRUN_KEEP_TASKS_DAYS = env.int("LANGRUN_KEEP_TASKS_DAYS", default=7)
LANGRUN_PRUNE_BATCH = env.int("LANGRUN_PRUNE_BATCH", default=1000)

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "langrun.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "langrun.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PAGINATION_CLASS": "langrun.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "langrun.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "langrun.schema.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "langrun.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "langrun.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["langrun.filters.FilterBackend"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "langrun API",
    "DESCRIPTION": (
        "Store flows and run them from their webhook URL (Langflow's Webhook Run Flow API, plus run ids, "
        "a run ledger and synchronous runs).\n\nAuthenticate with an API key in the `x-api-key` header "
        "(or query parameter), or log in at `/api-auth/login/` for a session. Every error has a `detail`: "
        "a string, or for 422 a list of `{loc, msg, type}`."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc are served from this server (drf-spectacular-sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Separate request and response components, so read-only fields are never asked for in a request.
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["langrun.schema.optional_slash_paths"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "webhooks.schema.webhook_body_required"],
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "flows.models.FlowRun.Status",
        "RunTriggerEnum": "flows.models.FlowRun.Trigger",
        "NodeStatusEnum": "flows.models.NodeResult.Status",
        "IngestTokenStateEnum": "webhooks.models.IngestToken.State",
    },
}

# --- Logging ----------------------------------------------------------------
# LOG_FORMAT=json writes one JSON object per line; lines about a run carry run_id and flow_id.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"run_context": {"()": "langrun.logs.RunContextFilter"}, "secret_paths": {"()": "langrun.logs.SecretPathFilter"}},
    "formatters": {
        "text": {"()": "langrun.logs.TextFormatter"},
        "json": {"()": "langrun.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["run_context", "secret_paths"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # django-q2 logs a line per enqueue and two per task at INFO; the run ledger records every run anyway.
    "loggers": {"django-q": {"level": env.str("LANGRUN_QUEUE_LOG_LEVEL", default="WARNING")}},
}

# --- Security (production) ----------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("LANGRUN_BEHIND_TLS_PROXY", default=False) else None
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Health checks come from inside the network over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^health_check$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
