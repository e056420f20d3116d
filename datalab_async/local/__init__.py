"""A local, in-process Datalab API server for tests, demos and offline development.

``LocalDatalab`` speaks the Datalab pipeline, workflow, Files, collection and eval batch-run
API (see docs/protocol.md) over real HTTP on 127.0.0.1, with knobs for latency, rate limits and
injected faults. Run it standalone with ``python -m datalab_async.local --port 8000``.
``LocalDify`` (``datalab_async.local.dify``) does the same for Dify's knowledge-pipeline API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Knobs", "LocalDatalab", "LocalDify", "serve_main"]

if TYPE_CHECKING:
    from .__main__ import serve_main
    from ._faults import Knobs
    from ._server import LocalDatalab
    from .dify import LocalDify

_LAZY = {
    "Knobs": "._faults",
    "LocalDatalab": "._server",
    "LocalDify": ".dify",
    "serve_main": ".__main__",
}


def __getattr__(name: str) -> Any:
    # Lazy so that importing the pytest plugin (a submodule) stays cheap.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
