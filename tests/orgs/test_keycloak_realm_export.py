"""The realm export in docs/keycloak-realm.json says what the server expects: its URLs are the
server's routes, and its mappers produce the claims the server's code reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from orgs import claims as claims_rules

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXPORT = json.loads((DOCS / "keycloak-realm.json").read_text())
CLIENT_ID = "sparks-presence"


def client(client_id: str) -> dict[str, Any]:
    return next(entry for entry in EXPORT["clients"] if entry["clientId"] == client_id)


def mapper(client_id: str, kind: str) -> dict[str, str]:
    return next(m["config"] for m in client(client_id)["protocolMappers"] if m["protocolMapper"] == kind)


def claim_from(config: dict[str, str], value: Any, client_id: str = CLIENT_ID) -> dict[str, Any]:
    """The claim a mapper adds, as Keycloak nests it: dots in the claim name make objects."""
    path = config["claim.name"].replace("${client_id}", config.get("usermodel.clientRoleMapping.clientId", client_id))
    *parents, leaf = re.split(r"(?<!\\)\.", path)
    claim: dict[str, Any] = {leaf: value}
    for name in reversed(parents):
        claim = {name: claim}
    return claim


def path_of(url: str) -> str:
    return urlsplit(url).path


def test_the_client_is_confidential_with_the_standard_flow_only():
    sparks = client(CLIENT_ID)

    assert (sparks["publicClient"], sparks["standardFlowEnabled"]) == (False, True)
    assert (sparks["implicitFlowEnabled"], sparks["directAccessGrantsEnabled"]) == (False, False)
    assert sparks["frontchannelLogout"] is False


def test_the_clients_urls_are_the_servers_routes():
    sparks = client(CLIENT_ID)
    attributes = sparks["attributes"]

    assert [path_of(uri) for uri in sparks["redirectUris"]] == [reverse("oidc_authentication_callback")]
    assert path_of(attributes["post.logout.redirect.uris"]) == django_settings.LOGOUT_REDIRECT_URL
    assert path_of(attributes["backchannel.logout.url"]) == reverse("oidc-backchannel-logout")
    assert attributes["backchannel.logout.session.required"] == "true"
    origin = urlsplit(sparks["redirectUris"][0])
    assert sparks["webOrigins"] == [f"{origin.scheme}://{origin.netloc}"]


@pytest.mark.parametrize(
    "kind",
    [
        "oidc-organization-membership-mapper",
        "oidc-group-membership-mapper",
        "oidc-usermodel-realm-role-mapper",
        "oidc-usermodel-client-role-mapper",
    ],
)
def test_each_mapper_reaches_the_id_token_the_access_token_and_userinfo(kind):
    config = mapper(CLIENT_ID, kind)

    assert [config[f"{where}.claim"] for where in ("id.token", "access.token", "userinfo.token")] == ["true"] * 3


def test_the_organization_mapper_gives_the_claim_the_server_reads(settings):
    claim = claim_from(mapper(CLIENT_ID, "oidc-organization-membership-mapper"), ["demo"])

    # Keycloak fills the claim only when the organization scope is among the token's scopes.
    assert all("organization" in entry["defaultClientScopes"] for entry in EXPORT["clients"])

    assert claims_rules.organization_of(claim) == claims_rules.OrganizationClaim(carried=True, slug="demo")


def test_the_groups_mapper_and_the_realms_groups_give_the_organization_in_group_mode(settings):
    settings.OIDC_ORG_CLAIM = ""
    settings.OIDC_ORG_GROUP_PREFIX = "/sparks-org-"
    config = mapper(CLIENT_ID, "oidc-group-membership-mapper")
    paths = [group["path"] for group in EXPORT["groups"]]

    assert config["full.path"] == "true"
    assert claims_rules.organization_of(claim_from(config, paths)).slug == "demo"


@pytest.mark.parametrize("kind", ["oidc-usermodel-realm-role-mapper", "oidc-usermodel-client-role-mapper"])
def test_the_role_mappers_give_the_roles_that_make_an_admin(settings, kind):
    settings.OIDC_ADMIN_ROLES = ["sparks-admin"]
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    config = mapper(CLIENT_ID, kind)
    defined = {role["name"] for role in EXPORT["roles"]["realm"]} | {
        role["name"] for role in EXPORT["roles"]["client"][CLIENT_ID]
    }

    assert defined == {"sparks-admin"}
    assert claims_rules.admin_by_roles(claim_from(config, ["sparks-admin"])) is True
    assert claims_rules.admin_by_roles(claim_from(config, ["offline_access"])) is False


def test_another_clients_tokens_name_this_api_in_their_audience():
    config = mapper("sparks-desktop", "oidc-audience-mapper")

    assert config["included.client.audience"] == CLIENT_ID
    assert config["access.token.claim"] == "true"


def test_the_guide_names_only_settings_that_exist_in_the_environment_example():
    guide = (DOCS / "keycloak.md").read_text()
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()

    named = set(re.findall(r"\bOIDC_[A-Z_]+\b", guide))
    assert named
    assert {name for name in named if not re.search(rf"^#? ?{name}=", example, re.MULTILINE)} == set()
