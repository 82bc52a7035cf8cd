"""WSGI entry point (gunicorn gthread workers: sync workers cut long downloads at their timeout).

The only entry point: under ASGI Django would read a synchronous StreamingHttpResponse into memory, whole
blobs at a time (deploy/README.md). gunicorn runs no system checks when it imports this module, so the key
checks run here: a worker without a usable master key refuses to boot instead of failing every request.
"""

import os

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "erphub.settings")

application = get_wsgi_application()

_errors = [m for m in checks.run_checks(tags=["kms"]) if m.is_serious() and not m.is_silenced()]
if _errors:
    raise ImproperlyConfigured("; ".join(str(m) for m in _errors))
