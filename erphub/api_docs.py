"""The API's documentation page, ``/api/docs/``: Swagger UI with no inline script or style.

Not in erphub/schema.py: drf-spectacular's views module imports the schema generator named in settings, so a
view class there would import drf-spectacular's views while they are still loading.
"""

from __future__ import annotations

import json
from typing import Any

from django.middleware.csrf import get_token
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.request import Request
from rest_framework.response import Response


class SwaggerUIView(SpectacularSwaggerView):
    """Swagger UI under the pages' Content-Security-Policy (erphub/csp.py: ``script-src 'self'``).

    drf-spectacular renders its start-up code into the page, or (its split view) into a script whose body
    carries the CSRF token; here the code is a static file, ``erphub/swagger-ui-init.js``, and the values it
    needs travel in a JSON data block of the page (``templates/erphub/swagger_ui.html``).
    """

    template_name = "erphub/swagger_ui.html"

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        data = response.data
        # drf-spectacular hands these over as JSON text, for its template to paste into code.
        data["swagger_ui_config"] = {
            "schemaUrl": data["schema_url"],
            "settings": json.loads(data["settings"]),
            "oauth2Config": json.loads(data["oauth2_config"]),
            "schemaAuthNames": json.loads(data["schema_auth_names"]),
            "csrfHeaderName": data["csrf_header_name"],
            "csrfToken": get_token(request),
        }
        return response
