"""Re-encrypting the integrations' stored secrets under the first of INTEGRATIONS_SECRET_KEYS.

After a new key is put first in INTEGRATIONS_SECRET_KEYS (the old ones after it, so that every
process still reads what is stored), `rotate_stored_secrets` rewrites each stored secret under
the new key; the old keys can then be removed. Idempotent: a secret already under the first key
is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import models, transaction

from integrations import crypto
from integrations.models import MatrixHomeserver, MicrosoftTenant

# Every model field holding a secret encrypted by `integrations.crypto`.
ENCRYPTED_FIELDS: list[tuple[type[models.Model], str]] = [
    (MatrixHomeserver, "as_token_encrypted"),
    (MicrosoftTenant, "client_secret_encrypted"),
]


@dataclass
class RotationReport:
    rotated: int = 0  # re-encrypted under the first key
    current: int = 0  # already under the first key
    unreadable: list[str] = field(default_factory=list)  # no configured key reads these objects


def rotate_stored_secrets() -> RotationReport:
    """Re-encrypt every stored secret under the first key; counts, and what no key reads."""
    report = RotationReport()
    for model, field_name in ENCRYPTED_FIELDS:
        # A list (one row per organization): no cursor stays open across the rows' transactions.
        for pk in list(model.objects.exclude(**{field_name: ""}).values_list("pk", flat=True)):
            _rotate_one(model, field_name, pk, report)
    return report


def _rotate_one(model: type[models.Model], field_name: str, pk: object, report: RotationReport) -> None:
    # Locked, so that a secret entered in the admin meanwhile is not overwritten with the old one.
    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=pk).first()
        ciphertext = getattr(row, field_name, "") if row is not None else ""
        if not ciphertext:
            return
        if crypto.is_under_first_key(ciphertext):
            report.current += 1
            return
        try:
            rotated = crypto.reencrypt(ciphertext)
        except crypto.SecretUnreadable:
            report.unreadable.append(str(row))  # names the model and the organization
            return
        model.objects.filter(pk=pk).update(**{field_name: rotated})
        report.rotated += 1
