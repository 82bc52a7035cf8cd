"""Who did it: a user (id and a username snapshot that outlives the account) or a named system part.

Every record of an actor — audit events, key rotation runs — uses this one type, so a person running
commands has one name everywhere (``system:cli:<os-user>``).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any

USER = "user"
SYSTEM = "system"
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Actor:
    type: str
    id: str
    name: str

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        if user is None or not getattr(user, "is_authenticated", False):
            return cls.anonymous()
        return cls(type=USER, id=str(user.pk), name=user.get_username())

    @classmethod
    def system(cls, name: str) -> Actor:
        """``Actor.system("rollout-guard")`` is ``system:rollout-guard``."""
        if not name or name.startswith("system:"):
            raise ValueError("system actor names are given without the 'system:' prefix")
        return cls(type=SYSTEM, id="", name=f"system:{name}")

    @classmethod
    def cli(cls) -> Actor:
        """A management command: the operating-system user who ran it (``system:cli:<os-user>``)."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no login name and no passwd entry (containers with an arbitrary uid)
            user = f"uid{os.getuid()}"
        return cls.system(f"cli:{user}")

    @classmethod
    def anonymous(cls) -> Actor:
        return cls(type=ANONYMOUS, id="", name="anonymous")
