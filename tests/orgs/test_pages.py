"""Signing in and out on the server-rendered pages (`orgs.pages`)."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_a_local_password_still_signs_in_on_the_sign_in_page(alice):
    alice.set_password("alice-secret-pass")
    alice.save()
    client = Client()

    response = client.post("/accounts/sign-in/", {"username": "alice", "password": "alice-secret-pass"})

    assert response.status_code == 302
    assert client.get("/me/").status_code == 200


def test_signing_out_ends_the_session(alice):
    alice.set_password("alice-secret-pass")
    alice.save()
    client = Client()
    client.post("/accounts/sign-in/", {"username": "alice", "password": "alice-secret-pass"})

    response = client.post("/accounts/sign-out/")

    assert response.status_code == 302
    assert client.get("/me/").status_code == 302
