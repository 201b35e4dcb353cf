"""Websocket routes of presence (mounted by `sparks_site.asgi`)."""

from django.urls import path

from presence.consumers import PresenceConsumer

websocket_urlpatterns = [
    path("ws/presence/", PresenceConsumer.as_asgi(), name="ws-presence"),
]
