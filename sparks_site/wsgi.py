"""WSGI entry point, for serving the REST API with synchronous workers."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparks_site.settings")

application = get_wsgi_application()
