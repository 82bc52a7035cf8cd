"""Stock Django ASGI entry point, for bench/bench_slow_clients.py's ``uvicorn`` mode only; never deployed.

``django.core.asgi.get_asgi_application()`` over the product's settings, unchanged: what a team gets by
putting the existing project under ``gunicorn -k uvicorn_worker.UvicornWorker`` (issue 13's candidate).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "erphub.settings")

application = get_asgi_application()
