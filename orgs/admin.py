from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from orgs.models import Membership, Organization, PresencePolicy, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "organization", "is_staff")
    list_select_related = ("membership__organization",)
    readonly_fields = ("public_id",)
    fieldsets = (*DjangoUserAdmin.fieldsets, ("SPARKS", {"fields": ("public_id", "oidc_subject")}))

    @admin.display(description="organization", ordering="membership__organization__name")
    def organization(self, user: User) -> str:
        membership = getattr(user, "membership", None)
        return str(membership.organization) if membership else "—"


class PresencePolicyInline(admin.StackedInline):
    model = PresencePolicy
    can_delete = False
    min_num = 1
    max_num = 1


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "member_count", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = (PresencePolicyInline, MembershipInline)

    @admin.display(description="members")
    def member_count(self, organization: Organization) -> int:
        return organization.memberships.count()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "organization", "role", "joined_at")
    list_filter = ("role", "organization")
    search_fields = ("user__username", "user__email", "organization__name")
    autocomplete_fields = ("user", "organization")
