"""Standalone local Datalab server: ``python -m datalab_async.local --port 8000 [knobs...]``.

The same command as ``datalab-async serve``: one parser, defined in ``datalab_async._cli.serve``
(every :class:`~datalab_async.local.Knobs` field is a flag).
"""

from __future__ import annotations

import sys

from .._cli.serve import build_parser, serve_main

__all__ = ["build_parser", "serve_main"]

if __name__ == "__main__":
    sys.exit(serve_main())
