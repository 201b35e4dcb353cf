"""Static files (the admin's, the Swagger UI's from drf-spectacular-sidecar, the pages') without a
proxy in front: every web process serves `/static/` from `STATIC_ROOT` with WhiteNoise, so a
deployment behind a proxy other than `make serve-prod`'s nginx is not left unstyled.

- `StaticFilesStorage`: collectstatic writes hashed copies (`base.0123456789ab.css`, cached for a
  year by nginx and WhiteNoise alike) and compressed ones (.gz, .br). Templates link the hashed
  names once collectstatic has written its manifest; before that (the test suite, a fresh clone
  running with `DEBUG=0`) they link the plain names instead of failing every page that links one,
  as Django's manifest storage would.
- `StaticFilesMiddleware`: WhiteNoise, also async-capable, so that under ASGI (the live server) a
  request that is not for a static file goes on without a hop to a thread.
"""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.staticfiles.storage import StaticFilesStorage as PlainStorage
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware
from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """Hashed, compressed names once collectstatic wrote its manifest; plain names before."""

    def url(self, name: str | None, force: bool = False) -> str:
        if not self.hashed_files:  # no manifest (yet): nothing collected, nothing hashed
            return PlainStorage.url(self, name)
        return super().url(name, force)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        # Opening the file (and stat) blocks: off the event loop.
        return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
