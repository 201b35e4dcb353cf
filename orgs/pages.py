"""The organization's server-rendered pages: signing in (the organization account first, a local
password for accounts that have one) and out. The presence pages are presence's
(`presence.pages`)."""

from __future__ import annotations

from django.contrib.auth import logout
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_POST

from orgs import oidc


class SignInView(LoginView):
    """The organization account first; a local password for accounts that have one (the demo)."""

    template_name = "pages/sign_in.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = oidc.enabled()
        context["oidc_url"] = oidc.sign_in_url(self.get_redirect_url()) if oidc.enabled() else ""
        context["failed"] = "failed" in self.request.GET
        return context


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    """Ends the session here and, for the organization account, at the provider too."""
    destination = oidc.provider_logout_url(request)
    logout(request)
    return HttpResponseRedirect(destination)
