"""ASGI entry point: HTTP (Django, including the SSE stream) and the presence websocket."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparks_site.settings")

django_asgi_app = get_asgi_application()

# These import models, so they come after Django is set up.
from presence.routing import websocket_urlpatterns  # noqa: E402
from sparks_site.live_auth import live_auth_stack  # noqa: E402
from sparks_site.periodic import start_in_process_beat  # noqa: E402

start_in_process_beat()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": live_auth_stack(URLRouter(websocket_urlpatterns)),
    }
)
