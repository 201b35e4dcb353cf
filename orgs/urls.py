from django.urls import include, path

from orgs import pages, views

urlpatterns = [
    path("accounts/sign-in/", pages.SignInView.as_view(), name="sign-in"),
    path("accounts/sign-out/", pages.sign_out, name="sign-out"),
    # Keycloak's "Backchannel logout URL": the provider ends sessions here (before the include below).
    path("oidc/backchannel-logout/", views.backchannel_logout, name="oidc-backchannel-logout"),
    # The organization account's sign-in: authenticate/, callback/ (the redirect URI), logout/.
    path("oidc/", include("mozilla_django_oidc.urls")),
]
