from django.urls import path

from . import views

app_name = "blobs"

urlpatterns = [
    path("files/", views.MyFilesView.as_view(), name="my-files"),
    path("secure/files/", views.BlobCollectionView.as_view(), name="collection"),
    # <str:> rather than <uuid:>: a malformed id gets the same JSON 404 as a missing one.
    path("secure/files/<str:blob_id>/", views.BlobDetailView.as_view(), name="detail"),
    path("secure/files/<str:blob_id>/stream", views.BlobStreamView.as_view(), name="stream"),
    path("legacy/files/<str:legacy_id>", views.LegacyFileView.as_view(), name="legacy"),
]
