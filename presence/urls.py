from django.urls import path, re_path

from presence import api, fastpath, sse
from sparks_site.errors import not_found

urlpatterns = [
    path("config", api.ConfigView.as_view(), name="config"),
    path("devices", api.DeviceListView.as_view(), name="devices"),
    path("devices/<str:device_id>", api.DeviceDetailView.as_view(), name="device"),
    path("devices/<str:device_id>/signals", fastpath.signals_endpoint, name="device-signals"),
    path("me/presence", api.MyPresenceView.as_view(), name="my-presence"),
    path("me/presence/explain", api.MyPresenceExplanationView.as_view(), name="my-presence-explain"),
    path("me/status", api.MyStatusView.as_view(), name="my-status"),
    path("me/calendar", api.MyCalendarView.as_view(), name="my-calendar"),
    path("me/privacy", api.MyPrivacyView.as_view(), name="my-privacy"),
    path("peers", api.PeerListView.as_view(), name="peers"),
    path("peers/stream", sse.peer_stream, name="peer-stream"),
    path("peers/<uuid:user_id>", api.PeerDetailView.as_view(), name="peer"),
    # Anything else under the API is a JSON 404, in debug mode too.
    re_path(r"^.*$", not_found),
]
