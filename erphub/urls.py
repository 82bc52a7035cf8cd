from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from . import health, metrics, tokens
from .api_docs import SwaggerUIView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Session login for every account, owners included: the admin's login refuses non-staff users.
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html", extra_context={"title": "Log in"}
        ),
        name="login",
    ),
    # POST only (Django's LogoutView), so a link or an <img> elsewhere cannot log anyone out.
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("api/token/", tokens.TokenObtainView.as_view(), name="token-obtain"),
    path("api/token/refresh/", tokens.TokenRefreshView.as_view(), name="token-refresh"),
    path("api/token/blacklist/", tokens.TokenBlacklistView.as_view(), name="token-blacklist"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # No inline script or style, so the pages' CSP holds (erphub/api_docs.py SwaggerUIView). Swagger UI's own
    # files come from drf-spectacular-sidecar through our static files, never a CDN.
    path("api/docs/", SwaggerUIView.as_view(url_name="api-schema"), name="api-docs"),
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", metrics.metrics, name="metrics"),
    path("", include("blobs.urls")),
    path("", RedirectView.as_view(pattern_name="blobs:my-files"), name="home"),
]

# Errors outside any view get the same JSON body as the API's (browsers asking for HTML get pages).
handler400 = "erphub.errors.bad_request"
handler403 = "erphub.errors.permission_denied"
handler404 = "erphub.errors.not_found"
handler500 = "erphub.errors.server_error"
