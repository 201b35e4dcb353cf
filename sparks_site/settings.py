"""Settings for SPARKS Presence, read from the environment (see `.env.example`).

With nothing set, the service runs on an embedded default: a SQLite file, an in-memory channel
layer, a local-memory cache and Celery tasks run in-process. `DATABASE_URL` and `REDIS_URL` move
it onto PostgreSQL and Redis, which is what several web and worker processes share.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from sparks_site import devenv
from sparks_site.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A fresh clone gets a development `.env` (generated key, DEBUG on) when nothing sets SECRET_KEY;
# the environment always wins over the file (see sparks_site/devenv.py).
devenv.ensure_dev_env(BASE_DIR / ".env")
if devenv.applies(BASE_DIR / ".env"):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
_INSECURE_DEV_KEY = "insecure-development-key-do-not-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        # No development .env could be written: one without SECRET_KEY exists, the checkout is
        # read-only, or the environment turned DEBUG off (production must bring its own key).
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (see .env.example).")
    SECRET_KEY = _INSECURE_DEV_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Transport security: cookies, HSTS, HTTPS ------------------------------------------------
# With DEBUG off the session and CSRF cookies are sent over HTTPS only, and HTTPS answers carry
# HSTS (SecurityMiddleware adds it to secure requests only, so plain-HTTP health checks are
# unaffected). Each can be overridden, e.g. SESSION_COOKIE_SECURE=0 for a plain-HTTP trial.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = env.str("SESSION_COOKIE_SAMESITE", default="Lax")
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
# HSTS sent by this host covers the host and its own subdomains only (not its parent domain's
# other hosts): on the dedicated host SPARKS usually gets, that is nothing else. Set it off when
# SPARKS answers on a domain whose subdomains include plain-HTTP sites.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
# Off unless set: with `preload`, anyone may submit the registrable domain to the browsers'
# built-in HSTS list, which binds every host of that domain to HTTPS for months. That is the
# domain owner's decision, not a default of one application on it (hence security.W021 below).
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a proxy that terminates TLS, request.is_secure() needs the proxy's header; set it only
# when the proxy always sets (and strips a client's) X-Forwarded-Proto, as serve-prod's nginx does
# (deploy/serve.py sets it when nginx holds the TLS certificate).
_PROXY_SETS_FORWARDED_PROTO = env.bool("SECURE_PROXY_SSL_HEADER_X_FORWARDED_PROTO", default=False)
if _PROXY_SETS_FORWARDED_PROTO:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Plain HTTP is redirected to HTTPS when Django can tell them apart: with DEBUG off, behind a proxy
# whose X-Forwarded-Proto is trusted. Without that header every request looks plain (behind a
# TLS-terminating proxy too), and redirecting would loop. /healthz, /readyz and /metrics are
# answered before the redirect (sparks_site.ops), so probes may stay on plain HTTP.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG and _PROXY_SETS_FORWARDED_PROTO)
SILENCED_SYSTEM_CHECKS = [
    # SECURE_HSTS_PRELOAD is off by default on purpose (see above); the check asks for it on.
    "security.W021",
]

INSTALLED_APPS = [
    # daphne first: its `runserver` serves the ASGI application.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "orgs",
    "presence",
    "integrations",
]

MIDDLEWARE = [
    # /healthz, /readyz and /metrics, before host validation, redirects and the request log.
    "sparks_site.ops.OperationsMiddleware",
    "sparks_site.logs.RequestLogMiddleware",
    # 503 under /api/ when the database or Redis cannot be reached (DRF views do it themselves).
    "sparks_site.errors.ServiceUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # /static/ from STATIC_ROOT (WhiteNoise), for deployments whose proxy does not serve it itself.
    "sparks_site.staticfiles.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The silent re-check at the provider of a session signed in there (idle while OIDC is off).
    "orgs.oidc.SessionRefresh",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "sparks_site.urls"
WSGI_APPLICATION = "sparks_site.wsgi.application"
ASGI_APPLICATION = "sparks_site.asgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default runs the expiry sweep in a thread beside the requests: take the write
    # lock at BEGIN so two writers wait for each other instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "orgs.User"

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
# Where `collectstatic` gathers every static file; nginx (make serve-prod) and WhiteNoise serve them
# from there.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed (cached for a year) and compressed names once collectstatic has run, plain names
    # before: the suite runs with DEBUG off and collects nothing, and Django's manifest storage
    # would fail every page that links a static file there (see sparks_site/staticfiles.py).
    "staticfiles": {"BACKEND": "sparks_site.staticfiles.StaticFilesStorage"},
}

# --- Redis: cache, channel layer, Celery broker -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    # One Redis client per process, not one per async context (each websocket's): sparks_site/cache.py.
    CACHES = {"default": {"BACKEND": "sparks_site.cache.SharedRedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: a change is one PUBLISH, received by each process's hub (one
            # subscriber per organization per process); the list-based layer took three round
            # trips per group send. Nobody else listens, and a socket that missed a change while
            # reconnecting gets a fresh snapshot, so nothing needs the lists' buffering.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL}],
                # Pub/sub channels are shared by every database of a Redis server: the default
                # prefix names the database, so deployments (or test runs) on other ones stay apart.
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default=f"sparks{env.db_url('REDIS_URL').get('NAME') or 0}"),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "sparks"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# A Redis Cluster's seed nodes ("host:port,host:port"): the hot presence state (with its rate
# limits, schedules, write-behind queue and history buffer) and the live fan-out move there, spread
# over the cluster's masters. `REDIS_URL` stays required beside it: Celery's broker, the cache and
# the sweep's clock need a plain Redis (neither kombu nor Django's cache speak the cluster protocol).
REDIS_CLUSTER_NODES = env.list("REDIS_CLUSTER_NODES", default=[])
if REDIS_CLUSTER_NODES:
    if not REDIS_URL:
        raise ImproperlyConfigured("REDIS_CLUSTER_NODES needs REDIS_URL beside it (Celery's broker, the cache)")
    CHANNEL_LAYERS = {
        "default": {
            # Sharded pub/sub: each organization's group on the master that owns its slot.
            "BACKEND": "presence.sharded_layer.ShardedPubSubChannelLayer",
            "CONFIG": {
                "nodes": REDIS_CLUSTER_NODES,
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="sparks:live:"),
            },
        }
    }

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
# Beat keeps its schedule in the database, where admins see and edit it; the entries of
# CELERY_BEAT_SCHEDULE below are written there when beat starts. With Redis, only the beat that
# holds a Redis lock runs it: a second beat waits as a standby (sparks_site/beat.py).
CELERY_BEAT_SCHEDULER = "sparks_site.beat:SingleBeatScheduler"
# The beat lock's lifetime, renewed every third of it while beat runs: a standby beat takes over
# within this many seconds of the running one dying (at once after a clean stop).
BEAT_LOCK_TTL_SECONDS = env.float("BEAT_LOCK_TTL_SECONDS", default=15.0)
if BEAT_LOCK_TTL_SECONDS < 3:
    raise ImproperlyConfigured("BEAT_LOCK_TTL_SECONDS must be at least 3 (the lock is renewed every third of it).")
# Where tasks run in-process (no worker: the embedded default), no beat runs either: the server
# process runs CELERY_BEAT_SCHEDULE itself, in a thread, and the tasks sent with a countdown when
# it is due (sparks_site/periodic.py).
BEAT_IN_PROCESS = env.bool("BEAT_IN_PROCESS", default=CELERY_TASK_ALWAYS_EAGER)

# --- Presence (the PRESENCE_* keys of the SPARKS manual) -----------------------------------
PRESENCE_USE_AGGREGATOR = env.bool("PRESENCE_USE_AGGREGATOR", default=True)
PRESENCE_SERVER_DISPATCH = env.bool("PRESENCE_SERVER_DISPATCH", default=False)
PRESENCE_USE_SSE = env.bool("PRESENCE_USE_SSE", default=False)
PRESENCE_DEVICE_TIMEOUT_SECONDS = env.int("PRESENCE_DEVICE_TIMEOUT_SECONDS", default=120)
PRESENCE_IDLE_TIMEOUT_SECONDS = env.int("PRESENCE_IDLE_TIMEOUT_SECONDS", default=300)
PRESENCE_HEARTBEAT_INTERVAL_SECONDS = env.int("PRESENCE_HEARTBEAT_INTERVAL_SECONDS", default=30)
PRESENCE_MICROSOFT_MAX_AGE_SECONDS = env.int("PRESENCE_MICROSOFT_MAX_AGE_SECONDS", default=300)
PRESENCE_SWEEP_INTERVAL_SECONDS = env.int("PRESENCE_SWEEP_INTERVAL_SECONDS", default=5)
# Heartbeats keep device times in the hot store; the database copy (for the admin, and to rebuild
# after a Redis restart) is refreshed at most this often per device.
PRESENCE_DEVICE_FLUSH_SECONDS = env.int("PRESENCE_DEVICE_FLUSH_SECONDS", default=180)
# A signal that changes a user's status is answered and pushed at once; the database copy of the
# device and the decision is written behind, by a beat task every PRESENCE_PERSIST_INTERVAL_SECONDS
# (a user changed many times in between is written once). The hot store (Redis) holds the change
# until then. Off: written before the answer (the embedded default, whose hot store is memory).
PRESENCE_WRITE_BEHIND = env.bool("PRESENCE_WRITE_BEHIND", default=bool(REDIS_URL))
PRESENCE_PERSIST_INTERVAL_SECONDS = env.int("PRESENCE_PERSIST_INTERVAL_SECONDS", default=2)
# API tokens resolved in the last few seconds are known to each process without a round trip; a
# revoked token is refused at once by the process that revoked it, by the others within this time.
PRESENCE_AUTH_PROCESS_CACHE_SECONDS = env.int("PRESENCE_AUTH_PROCESS_CACHE_SECONDS", default=5)
# A live connection watching a whole organization starts from a snapshot of it each server process
# reads once and keeps current with every change it passes on (presence/snapshots.py). What no change
# announces (a member joining or leaving, a new name) shows once it is read again, after this long.
# 0: read for every connection (those connecting while a read is under way share it).
PRESENCE_SNAPSHOT_MAX_AGE_SECONDS = env.float("PRESENCE_SNAPSHOT_MAX_AGE_SECONDS", default=30.0)
# How long the presence history (visible changes, device states; the admin's timeline) is kept.
PRESENCE_HISTORY_RETENTION_DAYS = env.int("PRESENCE_HISTORY_RETENTION_DAYS", default=30)
# Key of the keyed hash that turns an installation id into a pseudonymous device id.
PRESENCE_DEVICE_ID_KEY = env.str("PRESENCE_DEVICE_ID_KEY", default=f"device-id:{SECRET_KEY}")


_RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _rate(key: str, default: str) -> tuple[int, float] | None:
    """A rate limit `<count>/<period>`, the period a unit (s, m, h, d; "min" reads as m) with an
    optional multiplier: "120/m", "20/10s". "0" or "off": no limit. As (count, seconds)."""
    text = env.str(key, default=default).strip().lower()
    if text in ("0", "off", "none", ""):
        return None
    found = re.fullmatch(r"(\d+)\s*/\s*(\d*)\s*([smhd])[a-z]*", text)
    if not found or int(found[1]) == 0 or found[2] == "0":
        raise ImproperlyConfigured(f'{key} must look like "120/m" or "20/10s" (or "off"), not {text!r}.')
    return int(found[1]), float(int(found[2] or 1) * _RATE_UNITS[found[3]])


# Rate limits, answered 429 with Retry-After: signal requests (a REST request or a websocket
# message, whatever its batch size) per device and over all of a user's devices; changes of a
# user's inputs (manual status, calendar, presence settings, device sign-in and sign-out).
PRESENCE_RATE_LIMIT_DEVICE = _rate("PRESENCE_RATE_LIMIT_DEVICE", "120/m")
PRESENCE_RATE_LIMIT_USER = _rate("PRESENCE_RATE_LIMIT_USER", "600/m")
PRESENCE_RATE_LIMIT_STATUS = _rate("PRESENCE_RATE_LIMIT_STATUS", "60/m")

if PRESENCE_HEARTBEAT_INTERVAL_SECONDS >= PRESENCE_DEVICE_TIMEOUT_SECONDS:
    raise ImproperlyConfigured(
        "PRESENCE_HEARTBEAT_INTERVAL_SECONDS must be shorter than PRESENCE_DEVICE_TIMEOUT_SECONDS, "
        "or every device would time out between two heartbeats."
    )

# --- Integrations: Matrix and Microsoft (publishing, import) ----------------------------------
# Key the integrations' stored secrets (Microsoft client secrets, Matrix appservice tokens) are
# encrypted under. Default: derived from SECRET_KEY; changing it means entering them again.
INTEGRATIONS_SECRET_KEY = env.str("INTEGRATIONS_SECRET_KEY", default=f"integrations:{SECRET_KEY}")
# Rotation: several keys, comma-separated; new secrets under the first, any of them reads (see
# integrations/crypto.py, `manage.py rotate_integration_secrets`). Unset: INTEGRATIONS_SECRET_KEY.
_ROTATION_KEYS = [key.strip() for key in env.list("INTEGRATIONS_SECRET_KEYS", default=[]) if key.strip()]
INTEGRATIONS_SECRET_KEYS = _ROTATION_KEYS or [INTEGRATIONS_SECRET_KEY]
# A CA bundle for TLS to Microsoft and Matrix (a private PKI); empty: the default trust store.
INTEGRATIONS_CA_BUNDLE = env.str("INTEGRATIONS_CA_BUNDLE", default="")
INTEGRATIONS_HTTP_TIMEOUT_SECONDS = env.float("INTEGRATIONS_HTTP_TIMEOUT_SECONDS", default=10.0)
# Changes of one user within this window leave one request per target.
INTEGRATIONS_DISPATCH_COALESCE_SECONDS = env.float("INTEGRATIONS_DISPATCH_COALESCE_SECONDS", default=1.0)
# The longest wait between two attempts of a failing delivery (exponential backoff from 2 s).
INTEGRATIONS_RETRY_MAX_SECONDS = env.int("INTEGRATIONS_RETRY_MAX_SECONDS", default=300)
# Synapse decays a presence that no client syncs to offline after ~30 s: published online
# states are sent again when they are older than this.
MATRIX_PRESENCE_REFRESH_SECONDS = env.int("MATRIX_PRESENCE_REFRESH_SECONDS", default=10)
MICROSOFT_LOGIN_URL = env.str("MICROSOFT_LOGIN_URL", default="https://login.microsoftonline.com")
MICROSOFT_GRAPH_URL = env.str("MICROSOFT_GRAPH_URL", default="https://graph.microsoft.com/v1.0")
# The expirationDuration of SPARKS' Graph presence session (5 to 240); refreshed a minute before.
MICROSOFT_PRESENCE_SESSION_MINUTES = env.int("MICROSOFT_PRESENCE_SESSION_MINUTES", default=5)
MICROSOFT_IMPORT_INTERVAL_SECONDS = env.int("MICROSOFT_IMPORT_INTERVAL_SECONDS", default=60)

if not 5 <= MICROSOFT_PRESENCE_SESSION_MINUTES <= 240:
    raise ImproperlyConfigured("MICROSOFT_PRESENCE_SESSION_MINUTES must be between 5 and 240 (Graph's PT5M to PT4H).")

CELERY_BEAT_SCHEDULE = {
    "presence-sweep-expired": {
        "task": "presence.tasks.sweep_expired_presence",
        "schedule": timedelta(seconds=PRESENCE_SWEEP_INTERVAL_SECONDS),
        "options": {"expires": PRESENCE_SWEEP_INTERVAL_SECONDS},
    },
    "presence-persist": {
        "task": "presence.tasks.persist_presence",
        "schedule": timedelta(seconds=PRESENCE_PERSIST_INTERVAL_SECONDS),
        "options": {"expires": PRESENCE_PERSIST_INTERVAL_SECONDS},
    },
    "presence-flush-device-activity": {
        "task": "presence.tasks.flush_device_activity",
        "schedule": timedelta(seconds=60),
        "options": {"expires": 60},
    },
    "integrations-refresh-published-presence": {
        "task": "integrations.tasks.refresh_published_presence",
        "schedule": timedelta(seconds=MATRIX_PRESENCE_REFRESH_SECONDS),
        "options": {"expires": MATRIX_PRESENCE_REFRESH_SECONDS},
    },
    "integrations-import-microsoft-presence": {
        "task": "integrations.tasks.import_microsoft_presence",
        "schedule": timedelta(seconds=MICROSOFT_IMPORT_INTERVAL_SECONDS),
        "options": {"expires": MICROSOFT_IMPORT_INTERVAL_SECONDS},
    },
    "presence-prune-history": {
        "task": "presence.tasks.prune_presence_history",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3600},
    },
}

# The demo organization's colleagues act out a varied presence (presence/demo.py), played again
# every heartbeat interval so that their devices stay counted. For `make run`, never a deployment.
DEMO_COLLEAGUES = env.bool("DEMO_COLLEAGUES", default=False)
if DEMO_COLLEAGUES:
    CELERY_BEAT_SCHEDULE["presence-demo-colleagues"] = {
        "task": "presence.tasks.play_demo_colleagues",
        "schedule": timedelta(seconds=PRESENCE_HEARTBEAT_INTERVAL_SECONDS),
        "options": {"expires": PRESENCE_HEARTBEAT_INTERVAL_SECONDS},
    }

# Request bodies above this are refused before parsing (JSON 413 under /api/): the largest valid
# one, a calendar of 1,000 blocks, is ~70 KB.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("REQUEST_BODY_MAX_BYTES", default=256 * 1024)

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so that an anonymous request is answered 401 with a WWW-Authenticate header.
        "orgs.authentication.CachedTokenAuthentication",
        "orgs.bearer.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["sparks_site.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sparks_site.errors.api_exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "SPARKS Presence API",
    "DESCRIPTION": "One honest presence status per person, aggregated from devices, calendar, "
    "manual status and Microsoft presence.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name for the priority choices, whichever field carries them.
    "ENUM_NAME_OVERRIDES": {"PriorityEnum": ["calendar_first", "manual_first"]},
}

# --- OIDC: sign-in with the organization account (Keycloak) --------------------------------
# Everything derives from the issuer's discovery document (`<issuer>/.well-known/openid-configuration`,
# fetched on first use and cached): no endpoint is configured by hand. Empty issuer: OIDC is off,
# bearer tokens are refused and only local accounts sign in (the embedded default needs nothing).
OIDC_ISSUER = env.str("OIDC_ISSUER", default="").rstrip("/")
OIDC_ENABLED = bool(OIDC_ISSUER)
OIDC_RP_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = env.str("OIDC_SCOPES", default="openid email profile")
# Access tokens a bearer must be meant for: `aud` contains one of these (Keycloak's audience mapper),
# or `azp` (the client the token was issued to) is one of them. Default: this client's id.
OIDC_API_AUDIENCES = env.list("OIDC_API_AUDIENCES", default=[OIDC_RP_CLIENT_ID] if OIDC_RP_CLIENT_ID else [])
# Where the organization comes from: a claim holding the organization's slug (Keycloak's
# organization mapper, or a user attribute mapper), else groups that start with a prefix
# (`/sparks-org-acme` → acme). Each sign-in applies what the token says.
OIDC_ORG_CLAIM = env.str("OIDC_ORG_CLAIM", default="organization")
OIDC_ORG_GROUPS_CLAIM = env.str("OIDC_ORG_GROUPS_CLAIM", default="groups")
OIDC_ORG_GROUP_PREFIX = env.str("OIDC_ORG_GROUP_PREFIX", default="")
# Who administers their organization: a member holding one of these realm or client roles
# (`realm_access.roles`, `resource_access.<client id>.roles`) is its admin (with staff status), one
# without is a member; applied only when the roles claims are present. Empty: roles change nothing.
OIDC_ADMIN_ROLES = env.list("OIDC_ADMIN_ROLES", default=[])
# How long a back-channel logout is remembered (shared cache), so that the signed-out session's
# access tokens are refused until they would have expired: at least the realm's access token lifespan.
OIDC_LOGOUT_MEMORY_SECONDS = env.int("OIDC_LOGOUT_MEMORY_SECONDS", default=86400)
# The claim that carries the user's Entra object id (for publishing to and importing from Teams).
OIDC_ENTRA_OBJECT_ID_CLAIM = env.str("OIDC_ENTRA_OBJECT_ID_CLAIM", default="oid")
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT_SECONDS", default=5.0)
# How long the discovery document and the signing keys are trusted before being fetched again; an
# unknown key id refreshes the keys at once, at most every OIDC_JWKS_MIN_REFRESH_SECONDS.
OIDC_METADATA_CACHE_SECONDS = env.int("OIDC_METADATA_CACHE_SECONDS", default=3600)
OIDC_JWKS_MIN_REFRESH_SECONDS = env.int("OIDC_JWKS_MIN_REFRESH_SECONDS", default=60)
# Opaque access tokens are checked at the userinfo endpoint; the answer is kept this long (keyed
# by the token's hash, in the shared cache).
OIDC_USERINFO_CACHE_SECONDS = env.int("OIDC_USERINFO_CACHE_SECONDS", default=60)
# The browser session re-checks the sign-in at the provider (silently) this often.
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env.int("OIDC_SESSION_REFRESH_SECONDS", default=900)
# The provider's endpoints, derived from the issuer (see orgs/oidc.py), read by mozilla-django-oidc.
OIDC_STORE_ID_TOKEN = True  # the logout at the provider sends it as id_token_hint
OIDC_OP_LOGOUT_URL_METHOD = "orgs.oidc.provider_logout_url"
OIDC_AUTHENTICATE_CLASS = "orgs.oidc.AuthenticationRequestView"
OIDC_CALLBACK_CLASS = "orgs.oidc.AuthenticationCallbackView"
OIDC_EXEMPT_URLS = [re.compile(r"^/api/"), re.compile(r"^/ws/"), re.compile(r"^/admin/")]
LOGIN_URL = "sign-in"
LOGIN_REDIRECT_URL = "/"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/sign-in/?failed=1"
LOGOUT_REDIRECT_URL = "/accounts/sign-in/"

# Both do nothing while OIDC is off (no issuer): local accounts sign in with their password.
AUTHENTICATION_BACKENDS = ["orgs.oidc.OrganizationAccountBackend", "django.contrib.auth.backends.ModelBackend"]
if OIDC_ENABLED and not OIDC_RP_CLIENT_ID:
    raise ImproperlyConfigured("OIDC_ISSUER is set: set OIDC_CLIENT_ID (and OIDC_CLIENT_SECRET) too.")

# --- Operations: logs, readiness, metrics ---------------------------------------------------
# json: one JSON object per line (a line per request and per Celery task; see sparks_site/logs.py);
# text: plain lines for people. Default: json unless DEBUG.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or text.")
LOGGING = logging_config(LOG_FORMAT, env.str("LOG_LEVEL", default="INFO"))
# How long /readyz gives each dependency (database, Redis, Celery broker) to answer.
READINESS_TIMEOUT_SECONDS = env.float("READINESS_TIMEOUT_SECONDS", default=2.0)
# /readyz fails (naming `sweep`) when the expiry sweep has not completed for this long: beat or its
# worker stopped. A few intervals, so that one slow or skipped run does not take web processes out.
_SWEEP_WINDOW = max(3.0 * PRESENCE_SWEEP_INTERVAL_SECONDS, 30.0)
READINESS_SWEEP_STALE_SECONDS = env.float("READINESS_SWEEP_STALE_SECONDS", default=_SWEEP_WINDOW)
# /metrics answers a bearer of this token (Authorization: Bearer <token>); empty: /metrics is off (404).
PRESENCE_METRICS_TOKEN = env.str("PRESENCE_METRICS_TOKEN", default="")
# Set in the environment of every process (prometheus-client reads it itself, before any metric
# exists) to add up the metrics of several processes; the directory must exist and be emptied
# when the deployment starts. Read here only to catch a missing directory early.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR} is not a directory.")
