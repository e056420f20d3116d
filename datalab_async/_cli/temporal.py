"""``datalab-async temporal worker|run|status|stop``: bulk runs over Temporal workers.

The commands live with the Temporal integration (``datalab_async.temporal._cli``); this module
plugs them into the CLI. ``temporalio`` is imported only when one of them runs (the
``temporal`` extra), so ``--help`` works without it.
"""

from __future__ import annotations

from ..temporal._cli import add_parser as _add_temporal_parser
from ..temporal._cli import handle
from ._common import Subparsers

__all__ = ["add_parser"]


def add_parser(commands: Subparsers) -> None:
    """Add ``temporal`` (with its subcommands) to ``commands``."""
    parser = _add_temporal_parser(commands)
    parser.set_defaults(handler=handle)
