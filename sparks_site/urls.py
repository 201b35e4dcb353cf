from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

handler400 = "sparks_site.errors.bad_request"
handler404 = "sparks_site.errors.not_found"
handler500 = "sparks_site.errors.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("presence.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/schema/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    # The presence pages (settings, my presence), and the organization account's sign-in.
    path("", include("presence.page_urls")),
    path("", include("orgs.urls")),
]
