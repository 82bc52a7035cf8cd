"""System checks for ``FLAGS``: a mistake fails start-up with the fix in the message, not a request."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .conf import DEFAULTS, flag_setting
from .stages import STAGE_KEYS


@checks.register()
def check_flags_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    try:
        values = {name: flag_setting(name) for name in DEFAULTS}
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint="Fix FLAGS in erphub/settings.py.", id="flags.E001")]
    forced = values["FORCED_OFF"]
    if isinstance(forced, str) or not all(isinstance(name, str) for name in forced):
        errors.append(checks.Error("FLAGS['FORCED_OFF'] must be a list of flag names.", id="flags.E002"))
    for name in ("VERSION_CHECK_SECONDS", "RETRY_AFTER_SECONDS", "RETIRE_AFTER_DAYS"):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors.append(
                checks.Error(f"FLAGS[{name!r}] must be a number >= 0, not {value!r}.", id="flags.E003")
            )
    if values["VERSION_CHECK_SECONDS"] > 4:
        errors.append(
            checks.Error(
                "FLAGS['VERSION_CHECK_SECONDS'] above 4 breaks the promise that a change reaches every "
                "worker within 5 seconds.",
                id="flags.E004",
            )
        )
    holds = values["STAGE_HOLD_HOURS"]
    if set(holds) != set(STAGE_KEYS) or not all(isinstance(h, int) and h >= 0 for h in holds.values()):
        errors.append(checks.Error(f"FLAGS['STAGE_HOLD_HOURS'] maps {STAGE_KEYS} to hours.", id="flags.E005"))
    guard = values["GUARD"]
    for name, value in guard.items():
        if name in ("PROMETHEUS_URL", "MULTIPROC_DIR"):
            ok = value is None or isinstance(value, str)
            if ok and name == "PROMETHEUS_URL" and value and not value.startswith(("http://", "https://")):
                ok = False
        elif name == "FAIL_CLOSED":
            ok = isinstance(value, bool)
        else:
            ok = not isinstance(value, bool) and isinstance(value, int | float) and value >= 0
        if not ok:
            errors.append(
                checks.Error(
                    f"FLAGS['GUARD'][{name!r}] is invalid: {value!r}.",
                    hint="PROMETHEUS_URL: http(s) URL; FAIL_CLOSED: true or false; the rest: numbers >= 0.",
                    id="flags.E006",
                )
            )
    return errors
