"""`manage.py demo_presence`: the demo organization's colleagues act out their presence once
(presence/demo.py); `make run` runs it after `seed_demo`, and its server plays them on."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from presence.demo import play_demo_colleagues


class Command(BaseCommand):
    help = "Give the demo organization's colleagues a varied presence (available, busy, dnd, away, offline)."

    def handle(self, *args, **options) -> None:
        played = play_demo_colleagues()
        self.stdout.write(f"Demo colleagues playing their part: {played}.")
