"""The reliability suite: bad files, limits, kills, storage faults, load and hostile users.

Every test here is marked `reliability` (run in CI with the rest; `pytest -m reliability` alone).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
