"""API input/output shapes. Output only: uploads are bodies, not serializer input (architecture.md §5)."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Blob


class BlobLinksSerializer(serializers.Serializer):
    self = serializers.CharField(help_text="This file's metadata.")
    stream = serializers.CharField(help_text="The plaintext: GET/HEAD with Range support.")


class BlobSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True, help_text="Owner's username.")
    created = serializers.DateTimeField(source="created_at", read_only=True)
    stream_url = serializers.SerializerMethodField(help_text="Where to download the plaintext.")
    links = serializers.SerializerMethodField()
    sha256 = serializers.CharField(read_only=True, help_text="Hex SHA-256 of the plaintext.")

    class Meta:
        model = Blob
        fields = [
            "id",
            "filename",
            "content_type",
            "size",
            "sha256",
            "created",
            "owner",
            "stream_url",
            "links",
        ]
        read_only_fields = fields

    def get_stream_url(self, blob: Blob) -> str:
        return reverse("blobs:stream", args=[blob.id])

    @extend_schema_field(BlobLinksSerializer)
    def get_links(self, blob: Blob) -> dict[str, str]:
        return {"self": reverse("blobs:detail", args=[blob.id]), "stream": self.get_stream_url(blob)}
