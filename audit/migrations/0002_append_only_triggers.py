"""Append-only triggers on SQLite and PostgreSQL (audit/triggers.py explains the rules)."""

from django.db import migrations


def create(apps, schema_editor):
    from audit.triggers import statements

    for sql in statements(schema_editor.connection.vendor, version=1):
        schema_editor.execute(sql, params=None)


def drop(apps, schema_editor):
    from audit.triggers import statements

    for sql in statements(schema_editor.connection.vendor, reverse=True, version=1):
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
