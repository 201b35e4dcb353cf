"""`manage.py rotate_integration_secrets`: the stored secrets re-encrypted under the first key."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from integrations.rotation import rotate_stored_secrets


class Command(BaseCommand):
    help = (
        "Re-encrypt the integrations' stored secrets (Matrix as_tokens, Microsoft client secrets) under "
        "the first key of INTEGRATIONS_SECRET_KEYS. Idempotent. Exits 1 when some secret no configured key "
        "reads (enter those again in the admin)."
    )

    def handle(self, *args, **options) -> None:
        report = rotate_stored_secrets()
        self.stdout.write(
            f"Re-encrypted {report.rotated} secret(s) under the first key; "
            f"{report.current} already were; {len(report.unreadable)} unreadable."
        )
        if report.unreadable:
            for name in report.unreadable:
                self.stderr.write(f"Unreadable with the configured keys: {name}")
            raise CommandError(
                f"{len(report.unreadable)} secret(s) could not be read with any key of INTEGRATIONS_SECRET_KEYS: "
                "add the key they were encrypted under, or enter them again in the admin."
            )
