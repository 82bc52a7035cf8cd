"""Flag errors. They carry data; the admin turns them into messages, the API never sees them."""

from __future__ import annotations

from datetime import datetime


class FlagError(Exception):
    default_detail = "The flag operation failed."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class FlagConflict(FlagError):
    """Someone saved the flag since the caller read it (optimistic locking): nothing was written."""

    def __init__(
        self, *, name: str, expected: int, current: int, changed_by: str, changed_at: datetime | None
    ) -> None:
        self.name, self.expected, self.current = name, expected, current
        self.changed_by, self.changed_at = changed_by, changed_at
        when = f" at {changed_at:%Y-%m-%d %H:%M:%S} UTC" if changed_at else ""
        super().__init__(
            f"{changed_by or 'Someone'} changed {name}{when} (version {expected} → {current}) since you "
            "opened it; nothing was saved. Review the current values and make your change again."
        )


class FlagRetired(FlagError):
    default_detail = "This flag is retired: it is on for everyone and can no longer be changed."


class RetirementRefused(FlagError):
    """The flag is not (yet) eligible to retire; ``detail`` says why."""


class InvalidRollout(FlagError):
    """A rollout value outside 0–10000 basis points."""


class MetricsUnavailable(FlagError):
    """The rollout guard could not read its triggers (``source`` says where it looked, ``reason`` why)."""

    def __init__(self, *, source: str, reason: str) -> None:
        self.source, self.reason = source, reason
        super().__init__(f"{source}: {reason}")
