"""The presence pages' URLs (`presence.pages`), at the site's root; the API's are `presence.urls`."""

from django.urls import path

from presence import pages

urlpatterns = [
    path("", pages.people, name="home"),
    path("settings/privacy/", pages.privacy_settings, name="privacy-settings"),
    path("me/", pages.my_presence, name="my-presence-page"),
]
