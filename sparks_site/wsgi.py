"""WSGI entry point, for serving the REST API with synchronous workers (gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparks_site.settings")

django_application = get_wsgi_application()

from presence.fastlane import HeartbeatLane  # noqa: E402  (needs Django set up)

# Heartbeats of live devices are answered before Django's request handling; all else goes on.
# SPARKS_HEARTBEAT_LANE=off serves Django alone: only for measuring what the lane is worth
# (bench/heartbeat_ingest.py, `prod-no-lane`); read once, at startup.
if os.environ.get("SPARKS_HEARTBEAT_LANE", "on") == "off":
    application = django_application
else:
    application = HeartbeatLane(django_application)
