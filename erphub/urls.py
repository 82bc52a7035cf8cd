from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from . import health

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
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("", include("blobs.urls")),
    path("", RedirectView.as_view(pattern_name="blobs:my-files"), name="home"),
]
