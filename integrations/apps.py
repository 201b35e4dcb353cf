from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations (Matrix, Microsoft)"

    def ready(self) -> None:
        from integrations import dispatch, receivers  # noqa: F401  (receivers: connects them)
        from presence import events

        # Presence announces its changes; dispatch to Matrix and Microsoft Teams hears of them.
        events.subscribe(dispatch.enqueue)
