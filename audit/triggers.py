"""Database triggers that make the audit tables append-only against raw SQL (architecture.md §8).

Used by migration 0002, and by the tests' wipe as the owner (audit/tests/wipe.py), which drops and re-creates
them. The statements are versioned: a change goes into a new migration with a new constant, never edited in
place.

Rules, the same on both databases:
- ``audit_auditevent``: UPDATE refused; DELETE refused except the retention purge (below); TRUNCATE
  (PostgreSQL) refused unless the table is already empty (an empty table loses nothing).
- ``audit_purgeanchor`` and ``audit_legalhold``: UPDATE and DELETE refused, TRUNCATE refused if not empty.
- Purge: a row may go only while the purge permit is present (PostgreSQL: ``SET LOCAL erphub.audit_purge =
  'on'`` by the table owner or a member of role ``erphub_audit_purge``; SQLite, which has no roles: a row in
  ``audit_purgepermit`` written in the same transaction), below the latest anchor's sequence, older than its
  cutoff and its retention period, and not covered by any legal hold.

Version 2 (migration 0004): a hold with a release (``audit_legalholdrelease``) covers nothing any more, and
the release table is append-only like the holds. ``statements`` gives the newest rules (V1 then V2).
"""

from __future__ import annotations

PURGE_ROLE = "erphub_audit_purge"

GUARDED = ("audit_auditevent", "audit_purgeanchor", "audit_legalhold")

_HOLD_COVERS = """EXISTS (SELECT 1 FROM audit_legalhold h
        WHERE (h.target_type = '' OR h.target_type = OLD.target_type)
          AND (h.target_id = '' OR h.target_id = OLD.target_id)
          AND (h.since IS NULL OR OLD.timestamp >= h.since)
          AND (h.until IS NULL OR OLD.timestamp <= h.until))"""

SQLITE_V1 = [
    *[
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE on {table} refused'); END"""
        for table in GUARDED
    ],
    *[
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE on {table} refused'); END"""
        for table in GUARDED[1:]
    ],
    # CASE ... ELSE 1: any NULL (no anchor yet) counts as "refuse", never as "allow".
    f"""CREATE TRIGGER audit_auditevent_no_delete BEFORE DELETE ON audit_auditevent
    WHEN (CASE WHEN
        EXISTS (SELECT 1 FROM audit_purgepermit)
        AND OLD.sequence < (SELECT MAX(sequence) FROM audit_purgeanchor)
        AND OLD.timestamp < (SELECT cutoff FROM audit_purgeanchor ORDER BY sequence DESC LIMIT 1)
        AND julianday(OLD.timestamp) < julianday('now')
            - (SELECT retention_days FROM audit_purgeanchor ORDER BY sequence DESC LIMIT 1)
        AND NOT {_HOLD_COVERS}
      THEN 0 ELSE 1 END)
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE on audit_auditevent refused'); END""",
]

SQLITE_V1_REVERSE = [
    *[f"DROP TRIGGER IF EXISTS {table}_no_update" for table in GUARDED],
    *[f"DROP TRIGGER IF EXISTS {table}_no_delete" for table in GUARDED],
]

POSTGRESQL_V1 = [
    """CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        empty boolean;
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            -- An empty table loses nothing (test teardown flushes every table with TRUNCATE).
            EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME)
                INTO STRICT empty;
            IF empty THEN RETURN NULL; END IF;
        END IF;
        RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$""",
    f"""CREATE OR REPLACE FUNCTION audit_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        anchor record;
        owner name;
    BEGIN
        IF coalesce(current_setting('erphub.audit_purge', true), '') <> 'on' THEN
            RAISE EXCEPTION 'audit log is append-only: DELETE on % refused', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT tableowner INTO owner FROM pg_tables
            WHERE schemaname = TG_TABLE_SCHEMA AND tablename = TG_TABLE_NAME;
        IF NOT (pg_has_role(current_user, owner, 'MEMBER')
                OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PURGE_ROLE}')
                    AND pg_has_role(current_user, '{PURGE_ROLE}', 'MEMBER'))) THEN
            RAISE EXCEPTION 'audit purge needs the table owner or role {PURGE_ROLE}'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT sequence, cutoff, retention_days INTO anchor FROM audit_purgeanchor
            ORDER BY sequence DESC LIMIT 1;
        IF NOT FOUND OR OLD.sequence >= anchor.sequence OR OLD.timestamp >= anchor.cutoff
                OR OLD.timestamp >= now() - make_interval(days => anchor.retention_days) THEN
            RAISE EXCEPTION 'audit event % is not purgeable (anchor, cutoff or retention)', OLD.sequence
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF {_HOLD_COVERS} THEN
            RAISE EXCEPTION 'audit event % is under a legal hold', OLD.sequence
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END $$""",
    *[
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"""
        for table in GUARDED
    ],
    *[
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"""
        for table in GUARDED
    ],
    *[
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"""
        for table in GUARDED[1:]
    ],
    """CREATE TRIGGER audit_auditevent_no_delete BEFORE DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_guard_delete()""",
]

POSTGRESQL_V1_REVERSE = [
    *[
        f"DROP TRIGGER IF EXISTS {table}_{op} ON {table}"
        for table in GUARDED
        for op in ("no_update", "no_delete", "no_truncate")
    ],
    "DROP FUNCTION IF EXISTS audit_guard_delete()",
    "DROP FUNCTION IF EXISTS audit_refuse_change()",
]


RELEASES = "audit_legalholdrelease"
#: Every guarded table, children first (a release references its hold): the order to empty them in.
TABLES = (RELEASES, *GUARDED)

_HOLD_COVERS_V2 = f"""EXISTS (SELECT 1 FROM audit_legalhold h
        WHERE (h.target_type = '' OR h.target_type = OLD.target_type)
          AND (h.target_id = '' OR h.target_id = OLD.target_id)
          AND (h.since IS NULL OR OLD.timestamp >= h.since)
          AND (h.until IS NULL OR OLD.timestamp <= h.until)
          AND NOT EXISTS (SELECT 1 FROM {RELEASES} r WHERE r.hold_id = h.id))"""

# SQLite: the event trigger is the last statement of V1 with the hold condition swapped; no CREATE OR REPLACE.
SQLITE_V2 = [
    "DROP TRIGGER IF EXISTS audit_auditevent_no_delete",
    SQLITE_V1[-1].replace(_HOLD_COVERS, _HOLD_COVERS_V2),
    f"""CREATE TRIGGER {RELEASES}_no_update BEFORE UPDATE ON {RELEASES}
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE on {RELEASES} refused'); END""",
    f"""CREATE TRIGGER {RELEASES}_no_delete BEFORE DELETE ON {RELEASES}
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE on {RELEASES} refused'); END""",
]

SQLITE_V2_REVERSE = [
    f"DROP TRIGGER IF EXISTS {RELEASES}_no_update",
    f"DROP TRIGGER IF EXISTS {RELEASES}_no_delete",
    "DROP TRIGGER IF EXISTS audit_auditevent_no_delete",
    SQLITE_V1[-1],
]

# PostgreSQL: the purge guard function is replaced in place (its trigger stays); V1's function is index 1.
POSTGRESQL_V2 = [
    POSTGRESQL_V1[1].replace(_HOLD_COVERS, _HOLD_COVERS_V2),
    *[
        f"""CREATE TRIGGER {RELEASES}_{op} BEFORE {event} ON {RELEASES}
        FOR EACH {each} EXECUTE FUNCTION audit_refuse_change()"""
        for op, event, each in (
            ("no_update", "UPDATE", "ROW"),
            ("no_delete", "DELETE", "ROW"),
            ("no_truncate", "TRUNCATE", "STATEMENT"),
        )
    ],
]

POSTGRESQL_V2_REVERSE = [
    *[
        f"DROP TRIGGER IF EXISTS {RELEASES}_{op} ON {RELEASES}"
        for op in ("no_update", "no_delete", "no_truncate")
    ],
    POSTGRESQL_V1[1],
]

_VERSIONS = {
    "sqlite": [(SQLITE_V1, SQLITE_V1_REVERSE), (SQLITE_V2, SQLITE_V2_REVERSE)],
    "postgresql": [(POSTGRESQL_V1, POSTGRESQL_V1_REVERSE), (POSTGRESQL_V2, POSTGRESQL_V2_REVERSE)],
}


def statements(vendor: str, *, reverse: bool = False, version: int | None = None) -> list[str]:
    """One version's statements (for its migration), or, with ``version=None``, the newest rules in full
    (for the tests' wipe: create all, or drop all). Other databases: none (the model and queryset guards
    only; checks.py warns)."""
    versions = _VERSIONS.get(vendor, [])
    if version is not None:
        forward, backward = versions[version - 1]
        return backward if reverse else forward
    if reverse:
        # Newest first, so that V1's DROP FUNCTION comes after the release table's triggers that use it.
        return [sql for _, backward in reversed(versions) for sql in backward if not sql.startswith("CREATE")]
    return [sql for forward, _ in versions for sql in forward]
