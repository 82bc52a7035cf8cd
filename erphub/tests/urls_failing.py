"""The project's URLs plus two views that fail with a bug, for the 500 tests."""

from django.urls import include, path
from rest_framework.views import APIView

from erphub.urls import handler400, handler403, handler404, handler500  # noqa: F401  (the same handlers)


def django_boom(request):
    raise RuntimeError("secret-internal-detail")


class ApiBoom(APIView):
    def get(self, request):
        raise RuntimeError("secret-internal-detail")


urlpatterns = [
    path("boom/", django_boom),
    path("secure/boom/", ApiBoom.as_view()),
    path("", include("erphub.urls")),
]
