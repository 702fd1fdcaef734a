"""The publisher's status as a web worker sees it (a sensor in a fleet, docs/fleet.md): its
status page, attached read-only on first use. None when the fleet is off or the page is not
there (yet)."""

from __future__ import annotations

from leireye.errors import LeirEyeError
from leireye.fleet.status import PublisherStatus, StatusPage


class FleetView:
    def __init__(self, name: str | None) -> None:
        self.name = name
        self._page: StatusPage | None = None

    def read(self) -> PublisherStatus | None:
        if not self.name:
            return None
        try:
            if self._page is None:
                self._page = StatusPage.attach(self.name)
            return self._page.read()
        except LeirEyeError:
            return None
