"""pytest plugin (entry point ``datalab_async``): the ``datalab_local`` fixture.

``datalab_local`` is a started :class:`~datalab_async.local.LocalDatalab` with
``step_latency=0.01``, one per test, closed afterwards. It needs pytest-asyncio.

Every pytest session of a project that installs this package loads the plugin, so it imports
nothing of ours beyond the (lazy) package namespaces, and none of the dependencies: the server,
aiohttp and the models load when a test first uses the fixture. ``tests/test_import_cost.py``
checks this; ``benchmarks/bench_import.py`` measures it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from ._server import LocalDatalab

__all__ = ["datalab_local"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(func: _F) -> _F:
    # pytest-asyncio is optional: without it the plugin must still load (and stay inert).
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover
        return cast(_F, pytest.fixture(func))
    return cast(_F, pytest_asyncio.fixture(func))


@_async_fixture
async def datalab_local() -> AsyncIterator[LocalDatalab]:
    """A running local Datalab server (``.url``, ``.api_key``, ``.stats()``, ...)."""
    from ._server import LocalDatalab

    async with LocalDatalab(step_latency=0.01) as server:
        yield server
