"""botai settings: every value comes from the environment, with a default for a fresh machine.

The README's configuration table lists each variable; `.env.example` mirrors it.
"""

from pathlib import Path

import environ

from botai.celery import CELERY_TASK_QUEUES, CELERY_TASK_ROUTES

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# ---------------------------------------------------------------- paths
DATA_DIR = Path(env("BOTAI_DATA_DIR", default=str(BASE_DIR / "data")))
LOG_DIR = Path(env("LOG_DIR", default=str(DATA_DIR / "logs")))
MODEL_PATH = Path(env("MODEL_PATH", default=str(BASE_DIR / "models" / "botai-default.pt")))
DATA_DIR.mkdir(parents=True, exist_ok=True)
LOG_DIR.mkdir(parents=True, exist_ok=True)

# ---------------------------------------------------------------- core
DEBUG = env.bool("DJANGO_DEBUG", default=True)
# The fallback key is for local runs; production sets DJANGO_SECRET_KEY (check --deploy says so).
SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-local-only-" + "k" * 40)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served locally: /api/docs/ works offline
    "django_celery_beat",
    "botai",
    "signals_app",
    "trading_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "botai.urls"
WSGI_APPLICATION = "botai.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# ---------------------------------------------------------------- database
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'botai.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; the busy timeout (ms) and IMMEDIATE
    # transactions make concurrent writers wait instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
        ),
    }
    # Tests hand the database to worker subprocesses, so it must be a file, not :memory:.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_botai.sqlite3")}
else:
    # A new connection per request costs ~7 ms on PostgreSQL: keep them open.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # JIT compiling our short indexed queries cost milliseconds each and never paid back.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
    if env("TEST_DB_NAME", default=""):
        DATABASES["default"]["TEST"] = {"NAME": env("TEST_DB_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------- auth, i18n, static
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
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "admin:login"

# ---------------------------------------------------------------- security (on when DEBUG is off)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Exchange API secrets are encrypted at rest with this Fernet key (default: from SECRET_KEY).
FIELD_ENCRYPTION_KEY = env("FIELD_ENCRYPTION_KEY", default="")

# ---------------------------------------------------------------- Redis and Celery
EMBEDDED_REDIS_PORT = env.int("EMBEDDED_REDIS_PORT", default=6390)
EMBEDDED_REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
REDIS_URL = env("REDIS_URL", default=EMBEDDED_REDIS_URL)
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_QUEUES = CELERY_TASK_QUEUES
CELERY_TASK_ROUTES = CELERY_TASK_ROUTES
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower shows tasks live
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis redelivers an unacked task (its worker died) after this; it must exceed the longest task
# (training excluded). A worker scans for such tasks when it starts and every restore interval.
# The reliability tests shorten both so a killed worker's batch comes back in seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": 1,  # scan at every interval: a sweep is one ZRANGE
}
# Our LOGGING (task-id formatter, rotating files) applies inside workers too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
}

# ---------------------------------------------------------------- ML
ML_DEVICE = env("ML_DEVICE", default="auto")  # auto = cuda when available, else cpu
ML_TORCH_THREADS = env.int("ML_TORCH_THREADS", default=0)  # 0 = let torch decide per worker
MARKET_DATA_SOURCE = env("MARKET_DATA_SOURCE", default="simulated")  # simulated | replay | ccxt
REPLAY_DIR = env("REPLAY_DIR", default="")

# ---------------------------------------------------------------- API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_RENDERER_CLASSES": [
        "botai.renderers.FastJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "generate_signal": env("GENERATE_SIGNAL_THROTTLE", default="30/min")
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "botai API",
    "DESCRIPTION": "PatchTST trading signals, orders and positions",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# ---------------------------------------------------------------- logging
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(task_name)s %(task_id)s] %(message)s"


def _rotating(filename: str, level: str = "INFO") -> dict:
    return {
        "class": "logging.handlers.RotatingFileHandler",
        "filename": str(LOG_DIR / filename),
        "maxBytes": 10 * 1024 * 1024,
        "backupCount": 5,
        "formatter": "task",
        "level": level,
    }


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Celery's TaskFormatter fills task_id/task_name inside a task and "???" elsewhere.
    "formatters": {"task": {"()": "celery.app.log.TaskFormatter", "fmt": _LOG_FORMAT}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "task"},
        "ml_signals": _rotating("ml_signals.log"),
        "trading": _rotating("trading.log"),
        "error": _rotating("error.log", level="ERROR"),
    },
    "root": {"handlers": ["console", "error"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "mlcore": {"handlers": ["ml_signals"], "level": "INFO"},
        "signals_app": {"handlers": ["ml_signals"], "level": "INFO"},
        "trading_app": {"handlers": ["trading"], "level": "INFO"},
        # ccxt's DEBUG lines dump each request's headers, the exchange API key among them: never
        # let them through, whatever LOG_LEVEL says.
        "ccxt": {"level": "INFO"},
    },
}
