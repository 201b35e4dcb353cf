from django.urls import include, path

from orgs import pages

urlpatterns = [
    path("", pages.home, name="home"),
    path("accounts/sign-in/", pages.SignInView.as_view(), name="sign-in"),
    path("accounts/sign-out/", pages.sign_out, name="sign-out"),
    path("settings/privacy/", pages.privacy_settings, name="privacy-settings"),
    path("me/", pages.my_presence, name="my-presence-page"),
    # The organization account's sign-in: authenticate/, callback/ (the redirect URI), logout/.
    path("oidc/", include("mozilla_django_oidc.urls")),
]
