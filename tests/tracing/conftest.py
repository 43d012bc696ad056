from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tracing.receiver import Receiver, receiving


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving() as found:
        yield found
