"""``audit_verify``'s signed cursor (architecture §8): the newest event a run verified and where the rolling
full check stands, so each run checks only what is new plus a window of older history.

It lives in the database (``VerifyCursor``), where every worker (the admin's chain status) can read it, and
is signed with an HMAC under the server secret (``DJANGO_SECRET_KEY``, salted for this use), which the
database does not hold: a database superuser can delete the cursor or put back an older one — that only
makes the next runs start earlier — but cannot write one that verifies. A cursor that does not verify is
ignored and reported, like a missing one. Rotating the server secret invalidates it the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.utils.crypto import constant_time_compare, salted_hmac

from .canonical import canonical_bytes
from .models import VerifyCursor

NAME = "chain"
KEY_SALT = "erphub.audit.verify-cursor"
VERSION = 1


@dataclass(frozen=True)
class Cursor:
    sequence: int  # the newest event the last passing run verified (0: none yet)
    hash: str
    window_next: int  # where the rolling check's next window starts
    pass_started: str  # when the rolling pass under way began (format_timestamp)
    full_started: str | None  # the last complete verification: every event was checked between these
    full_finished: str | None
    runs: int
    checked_at: str  # when the last run ended
    broken: dict[str, Any] | None = None  # {"sequence", "reason"} when the last run found a break
    pass_runs: int = 0  # windows the pass under way has checked

    def state(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self)}


def _sign(state: dict[str, Any]) -> str:
    return salted_hmac(KEY_SALT, canonical_bytes(state), algorithm="sha256").hexdigest()


def load_cursor() -> tuple[Cursor | None, str | None]:
    """The stored cursor if its signature verifies, else None and the reason (None, None: there is none)."""
    row = VerifyCursor.objects.filter(name=NAME).first()
    if row is None:
        return None, None
    state = row.state
    if not isinstance(state, dict) or not constant_time_compare(_sign(state), row.signature):
        return None, "the verification cursor's signature does not verify; it was ignored"
    try:
        if state.pop("version") != VERSION:
            raise ValueError(state)
        return Cursor(**state), None
    except (KeyError, TypeError, ValueError):
        return None, "the verification cursor has unexpected fields; it was ignored"


def save_cursor(cursor: Cursor) -> None:
    state = cursor.state()
    VerifyCursor.objects.update_or_create(name=NAME, defaults={"state": state, "signature": _sign(state)})
