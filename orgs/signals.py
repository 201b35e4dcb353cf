"""Signals other packages listen to, so that `orgs` need not know them."""

from django.dispatch import Signal

# Sent by `orgs.services.user_from_claims` once the user and the membership follow the provider's
# claims, with `user` and `claims` (the ID token's or userinfo's): e.g. the integrations take the
# user's Entra object id from them.
claims_applied = Signal()

# Sent by the organization account's sign-in callback once the browser session is signed in (a
# sign-in or a silent re-check), with `request`: `orgs.logout` notes which provider session it is.
browser_signed_in = Signal()
