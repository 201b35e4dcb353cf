"""The Celery application: `celery -A sparks_site worker` and `celery -A sparks_site beat`."""

import os

from celery import Celery

from sparks_site.logs import connect_task_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparks_site.settings")

# In-process (the embedded default), a task sent with a countdown waits for it (sparks_site.periodic).
app = Celery("sparks_site", task_cls="sparks_site.periodic:DeferringTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# A JSON line per task (name, id, state, duration), and Django's LOGGING in worker and beat.
connect_task_logging()
