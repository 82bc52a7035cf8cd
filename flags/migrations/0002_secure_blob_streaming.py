"""The version stamp's row, and the flag that gates the secure file API.

The flag starts enabled at 100 % with the beta group included: the API already serves everyone when this
migration runs, and a flag created "off" would lock every existing user out of their files on deploy.
Operators start a rollout by lowering it (or a fresh install by choosing the Internal stage) in the admin.
"""

import secrets

from django.db import migrations
from django.utils import timezone


def create(apps, schema_editor):
    db = schema_editor.connection.alias
    apps.get_model("flags", "FlagStamp").objects.using(db).get_or_create(pk=1, defaults={"value": 0})
    apps.get_model("flags", "Flag").objects.using(db).get_or_create(
        name="secure_blob_streaming",
        defaults={
            "description": "The secure file API (/secure/files/): encrypted uploads and ranged downloads.",
            "enabled": True,
            "kill_switch": False,
            "beta_enabled": True,
            "rollout_basis_points": 10_000,
            "salt": secrets.token_hex(16),
            "changed_at": timezone.now(),
        },
    )


def remove(apps, schema_editor):
    db = schema_editor.connection.alias
    apps.get_model("flags", "Flag").objects.using(db).filter(name="secure_blob_streaming").delete()


class Migration(migrations.Migration):
    dependencies = [("flags", "0001_initial")]

    operations = [migrations.RunPython(create, remove, elidable=False)]
