from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent import metrics


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    """Counter groups are per process; each test starts from zero."""
    metrics.reset_for_tests()
    yield
