"""Placeholder."""

from __future__ import annotations

from typing import Any


class SqlRoutes:
    def __init__(self, *args: Any) -> None:
        pass

    def add_to(self, router: Any) -> None:
        pass
