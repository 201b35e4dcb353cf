from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations (Matrix, Microsoft)"

    def ready(self) -> None:
        from integrations import receivers  # noqa: F401  (connects the receivers)
