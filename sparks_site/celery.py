"""The Celery application: `celery -A sparks_site worker` and `celery -A sparks_site beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparks_site.settings")

app = Celery("sparks_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
