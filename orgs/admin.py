"""The admin as the control room: superusers see everything, an organization's admins (membership
role admin, and `is_staff` to enter) see and change their own organization only.

Scoping is done three times over, so that no URL leaks another organization: `get_queryset`
(changelists, actions, autocomplete), the object-level `has_*_permission` checks, and the choices
of every foreign key to an organization or a user. An object outside the scope is a 404, the same
answer as an object that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from rest_framework.authtoken.models import TokenProxy

from orgs.models import Membership, Organization, PresencePolicy, User

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"


@dataclass(frozen=True, slots=True)
class AdminScope:
    """What a signed-in staff user administers: everything (superusers), one organization (its
    admins), or nothing (other staff)."""

    everything: bool
    organization_id: int | None

    @property
    def nothing(self) -> bool:
        return not self.everything and self.organization_id is None


def admin_scope(request: HttpRequest) -> AdminScope:
    """The request user's scope, computed once per request."""
    cached = getattr(request, "_sparks_admin_scope", None)
    if cached is not None:
        return cached
    user = request.user
    if not (user.is_active and user.is_staff):
        scope = AdminScope(False, None)
    elif user.is_superuser:
        scope = AdminScope(True, None)
    else:
        organization_id = (
            Membership.objects.filter(user_id=user.pk, role=Membership.Role.ADMIN)
            .values_list("organization_id", flat=True)
            .first()
        )
        scope = AdminScope(False, organization_id)
    request._sparks_admin_scope = scope
    return scope


class OrgScopedPermissions:
    """Permission checks for both model admins and inlines: superusers keep Django's own checks
    (and whatever the admin class restricts further); an organization admin may do
    `org_admin_actions` to objects of their organization, without Django model permissions."""

    org_admin_actions: frozenset[str] = frozenset({VIEW, CHANGE, ADD, DELETE})

    def _scoped(self, request: HttpRequest, action: str, obj: Model | None, default) -> bool:
        scope = admin_scope(request)
        if scope.everything:
            return default()
        if scope.nothing or action not in self.org_admin_actions:
            return False
        return obj is None or self.in_scope(request, obj)

    def in_scope(self, request: HttpRequest, obj: Model) -> bool:
        raise NotImplementedError

    def has_view_permission(self, request, obj=None) -> bool:
        return self._scoped(
            request, VIEW, obj, lambda: super(OrgScopedPermissions, self).has_view_permission(request, obj)
        )

    def has_add_permission(self, request, obj=None) -> bool:
        # ModelAdmin.has_add_permission takes no object, InlineModelAdmin's takes the parent.
        def default() -> bool:
            parent = super(OrgScopedPermissions, self)
            if isinstance(self, InlineModelAdmin):
                return parent.has_add_permission(request, obj)
            return parent.has_add_permission(request)

        return self._scoped(request, ADD, obj, default)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._scoped(
            request, CHANGE, obj, lambda: super(OrgScopedPermissions, self).has_change_permission(request, obj)
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._scoped(
            request, DELETE, obj, lambda: super(OrgScopedPermissions, self).has_delete_permission(request, obj)
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Choices are the queryset the submitted value is validated against: an organization admin
        # can neither see nor pick another organization or its people.
        scope = admin_scope(request)
        if not scope.everything:
            if db_field.related_model is Organization:
                kwargs["queryset"] = Organization.objects.filter(pk=scope.organization_id)
            elif db_field.related_model is User:
                kwargs["queryset"] = User.objects.filter(membership__organization_id=scope.organization_id)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class OrgScopedAdmin(OrgScopedPermissions, admin.ModelAdmin):
    """A model admin whose objects belong to an organization through `org_lookup` (None: to no
    organization, so superusers' alone). Every model registered in the admin has one."""

    org_lookup: str | None = "user__membership__organization"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        scope = admin_scope(request)
        if scope.everything:
            return queryset
        if scope.nothing or self.org_lookup is None:
            return queryset.none()
        return queryset.filter(**{self.org_lookup: scope.organization_id})

    def in_scope(self, request: HttpRequest, obj: Model) -> bool:
        return self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_module_permission(self, request: HttpRequest) -> bool:
        scope = admin_scope(request)
        return super().has_module_permission(request) if scope.everything else not scope.nothing

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        # Django answers a missing object with a redirect and a "doesn't exist" message; outside
        # the scope it is missing too, and a plain 404 says nothing more about it.
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such object.")
        return obj


class ViewOnly:
    """A mixin, before the model admin's classes: rows shown in the admin and written only by the
    product, never added, changed or deleted there."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class SuperusersOnlyAdmin(OrgScopedAdmin):
    """Objects of no organization (groups, the periodic task schedules): superusers' alone. For an
    organization admin they do not exist, as another organization's objects do not."""

    org_lookup = None
    org_admin_actions = frozenset()


def scope_registered(model: type[Model], scoped: type[OrgScopedAdmin], **attributes: object) -> None:
    """Register `model` again with its current admin (another app's) scoped as `scoped`."""
    current = type(admin.site.get_model_admin(model))
    admin.site.unregister(model)
    admin.site.register(model, type(current.__name__, (scoped, current), {"__module__": __name__, **attributes}))


class OrgScopedInline(OrgScopedPermissions):
    """Inlines of an organization's change page: the page itself is scoped, so the parent is in
    scope whenever it is shown."""

    def in_scope(self, request: HttpRequest, obj: Model) -> bool:
        return True


@admin.register(User)
class UserAdmin(OrgScopedAdmin, DjangoUserAdmin):
    org_lookup = "membership__organization"
    # Organization admins deactivate people rather than delete them.
    org_admin_actions = frozenset({VIEW, CHANGE, ADD})
    list_display = ("username", "email", "first_name", "last_name", "organization", "is_staff")
    list_select_related = ("membership__organization",)
    readonly_fields = ("public_id", "presence_page")
    fieldsets = (*DjangoUserAdmin.fieldsets, ("SPARKS", {"fields": ("public_id", "oidc_subject", "presence_page")}))

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if not admin_scope(request).everything:
            # A superuser's account is out of reach of organization admins, whatever its membership.
            queryset = queryset.filter(is_superuser=False)
        return queryset

    def get_fieldsets(self, request: HttpRequest, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if admin_scope(request).everything or obj is None:
            return fieldsets
        # No superuser flag, groups or permissions for organization admins to grant.
        allowed = []
        for name, options in fieldsets:
            fields = [f for f in options["fields"] if f not in ("is_superuser", "groups", "user_permissions")]
            allowed.append((name, {**options, "fields": fields}))
        return allowed

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        if not admin_scope(request).everything:
            # The sign-in link to the organization account is the provider's to set.
            readonly += ("oidc_subject",)
        return readonly

    def save_model(self, request: HttpRequest, obj: User, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        scope = admin_scope(request)
        if not change and not scope.everything:
            # A user an organization admin creates belongs to that organization.
            Membership.objects.get_or_create(user=obj, defaults={"organization_id": scope.organization_id})

    @admin.display(description="organization", ordering="membership__organization__name")
    def organization(self, user: User) -> str:
        membership = getattr(user, "membership", None)
        return str(membership.organization) if membership else "—"

    @admin.display(description="presence")
    def presence_page(self, user: User) -> str:
        if user.pk is None:
            return "—"
        url = reverse("admin:presence_presencestate_change", args=[user.pk])
        return format_html('<a href="{}">Presence now, the last 24 hours and actions</a>', url)


class PresencePolicyInline(OrgScopedInline, admin.StackedInline):
    model = PresencePolicy
    can_delete = False
    min_num = 1
    max_num = 1
    org_admin_actions = frozenset({VIEW, CHANGE})
    fields = (
        "device_timeout_seconds",
        "idle_timeout_seconds",
        "allow_calendar",
        "allow_microsoft",
        "allow_appear_offline",
        "allow_external_dispatch",
        "default_priority",
    )


class MembershipInline(OrgScopedInline, admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)
    # Organization admins change roles; people join by being created here or by signing in.
    org_admin_actions = frozenset({VIEW, CHANGE})

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly if admin_scope(request).everything else (*readonly, "user")


@admin.register(Organization)
class OrganizationAdmin(OrgScopedAdmin):
    org_lookup = "pk"
    org_admin_actions = frozenset({VIEW, CHANGE})
    list_display = ("name", "slug", "member_count", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = (PresencePolicyInline, MembershipInline)

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        # The slug is how sign-in claims name the organization.
        return readonly if admin_scope(request).everything else (*readonly, "slug")

    def get_prepopulated_fields(self, request: HttpRequest, obj=None):
        return super().get_prepopulated_fields(request, obj) if admin_scope(request).everything else {}

    @admin.display(description="members")
    def member_count(self, organization: Organization) -> int:
        return organization.memberships.count()


@admin.register(Membership)
class MembershipAdmin(OrgScopedAdmin):
    org_lookup = "organization"
    org_admin_actions = frozenset({VIEW, CHANGE})
    list_display = ("user", "organization", "role", "joined_at")
    # Only the organizations in the changelist, so the filter names no other organization.
    list_filter = ("role", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__username", "user__email", "organization__name")
    autocomplete_fields = ("user", "organization")

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        # Nobody is moved to another organization, or swapped for someone else, by its admins.
        return readonly if admin_scope(request).everything else (*readonly, "user", "organization")


# --- The admins of other apps, scoped the same way -------------------------------------------------

# API tokens are credentials: superusers' alone, though each is of its user's organization.
scope_registered(TokenProxy, OrgScopedAdmin, org_admin_actions=frozenset())
for _model in (Group, PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
    scope_registered(_model, SuperusersOnlyAdmin)
