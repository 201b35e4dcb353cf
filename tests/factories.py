"""factory_boy factories for the models tests need."""

from __future__ import annotations

import factory
from django.utils import timezone
from faker import Faker

from orgs.models import Membership, Organization, PresencePolicy, User
from presence.models import Device


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    policy = factory.RelatedFactory("tests.factories.PresencePolicyFactory", factory_related_name="organization")


class PresencePolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PresencePolicy
        django_get_or_create = ("organization",)

    organization = factory.SubFactory(OrganizationFactory, policy=None)


_faker = Faker()
# The fixtures' people: a generated name equal to one of theirs would make a test that looks for
# "carol" on a page find another organization's Carol where there is none.
_FIXTURE_NAMES = frozenset({"alice", "bob", "carol", "dave", "olga"})


def _given_name() -> str:
    while (name := _faker.first_name()).lower() in _FIXTURE_NAMES:
        pass
    return name


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.LazyFunction(_given_name)
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.django.Password("correct horse battery staple")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Membership.Role.MEMBER


class DeviceFactory(factory.django.DjangoModelFactory):
    """A device row written directly, for tests that need a device in a given state."""

    class Meta:
        model = Device

    device_id = factory.Sequence(lambda n: f"{n:032x}")
    user = factory.SubFactory(UserFactory)
    label = "laptop"
    registered_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.LazyFunction(timezone.now)
    last_active_at = factory.LazyFunction(timezone.now)


class ExternalAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "integrations.ExternalAccount"
        django_get_or_create = ("user",)

    user = factory.SubFactory(UserFactory)
    microsoft_object_id = factory.Faker("uuid4")
    matrix_user_id = ""


class MicrosoftTenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "integrations.MicrosoftTenant"
        django_get_or_create = ("organization",)

    organization = factory.SubFactory(OrganizationFactory)
    tenant_id = factory.Faker("uuid4")
    client_id = factory.Faker("uuid4")
    client_secret = "sparks-test-client-secret"
    enabled = True


class MatrixHomeserverFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "integrations.MatrixHomeserver"
        django_get_or_create = ("organization",)

    organization = factory.SubFactory(OrganizationFactory)
    base_url = "http://127.0.0.1:8008"
    server_name = "localhost"
    as_token = "sparks-test-as-token"
    enabled = True
