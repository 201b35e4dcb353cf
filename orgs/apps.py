from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "orgs"
    verbose_name = "Organizations"

    def ready(self) -> None:
        # Connect the receivers: the cache invalidation, and forgetting a signed-out session's provider session.
        from orgs import authentication, logout  # noqa: F401
