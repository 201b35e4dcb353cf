"""ASGI entry point (HTTP now; websockets join the router when live presence lands)."""

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparks_site.settings")

django_asgi_app = get_asgi_application()

from presence.sweeper import start_in_process_sweeper  # noqa: E402  (needs Django set up)

start_in_process_sweeper()

application = ProtocolTypeRouter({"http": django_asgi_app})
