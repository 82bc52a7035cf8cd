"""WSGI entry point (gunicorn gthread workers: sync workers cut long downloads at their timeout)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "erphub.settings")

application = get_wsgi_application()
