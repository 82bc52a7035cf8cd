"""Test support: ``override_flag`` pins a flag's answer for every user, as a context manager or decorator.

    with override_flag("secure_blob_streaming", active=False):
        assert client.get("/secure/files/").status_code == 404

    @override_flag("secure_blob_streaming", active=True)
    def test_something(): ...

For tests only: the override wins over everything (kill switches included) in this process, whatever the
database holds, and is undone on exit. Answers already memoized on a request keep their value.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from typing import Any

from . import services

_MISSING = object()


class override_flag(ContextDecorator):
    def __init__(self, name: str, active: bool = True) -> None:
        self.name = name
        self.active = active
        self._saved: list[Any] = []

    def __enter__(self) -> override_flag:
        self._saved.append(services._overrides.get(self.name, _MISSING))
        services._overrides[self.name] = self.active
        return self

    def __exit__(self, *exc_info: object) -> None:
        previous = self._saved.pop()
        if previous is _MISSING:
            services._overrides.pop(self.name, None)
        else:
            services._overrides[self.name] = previous
