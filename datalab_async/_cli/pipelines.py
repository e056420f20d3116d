"""``datalab-async pipelines list | create | publish``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_OK,
    Subparsers,
    UsageError,
    client,
    connection_flags,
    positive_int,
    rich_console,
)

__all__ = ["add_parser", "parse_steps"]


def add_parser(commands: Subparsers) -> None:
    """Add ``pipelines`` and its actions to ``commands``."""
    conn = connection_flags()
    pipelines = commands.add_parser("pipelines", help="list, create and publish pipelines")
    actions = pipelines.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[conn], help="list pipelines")
    listing.set_defaults(handler=_list)
    listing.add_argument("--all", action="store_true", help="include unsaved drafts")
    listing.add_argument("--archived", action="store_true", help="include archived pipelines")
    listing.add_argument("--limit", type=positive_int, default=50, metavar="N")
    listing.add_argument("--json", action="store_true", help="print JSON")
    create = actions.add_parser(
        "create",
        parents=[conn],
        help="create a pipeline from steps",
        description="Each STEP is a step type (convert, extract, segment, custom) optionally "
        "followed by '=' and its settings as JSON or @file.json, e.g. "
        "extract=@invoice-settings.json.",
    )
    create.set_defaults(handler=_create)
    create.add_argument("steps", nargs="*", metavar="STEP")
    create.add_argument(
        "--from-file", metavar="FILE", help="a JSON list of {type, settings} step objects"
    )
    create.add_argument("--name", help="save the pipeline under this name")
    create.add_argument("--publish", action="store_true", help="publish it as a version")
    publish = actions.add_parser("publish", parents=[conn], help="publish the current draft")
    publish.set_defaults(handler=_publish)
    publish.add_argument("pipeline_id", metavar="PIPELINE_ID")
    publish.add_argument("--description", help="version description (up to 500 characters)")


def _read_json_argument(text: str, what: str) -> Any:
    try:
        if text.startswith("@"):
            return json.loads(Path(text[1:]).read_text(encoding="utf-8"))
        return json.loads(text)
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {text[1:]!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{what}: invalid JSON: {exc}") from None


def parse_steps(specs: Sequence[str], from_file: str | None) -> list[dict[str, Any]]:
    """Step objects from ``TYPE[=SETTINGS]`` arguments and/or a JSON file (UsageError if bad)."""
    steps: list[dict[str, Any]] = []
    if from_file is not None:
        loaded = _read_json_argument("@" + from_file, "--from-file")
        if not isinstance(loaded, list) or not all(isinstance(s, dict) for s in loaded):
            raise UsageError("--from-file must hold a JSON list of step objects")
        steps.extend(loaded)
    for spec in specs:
        kind, sep, settings_text = spec.partition("=")
        if not kind.strip():
            raise UsageError(f"step {spec!r} has no type")
        settings: Any = {}
        if sep:
            settings = _read_json_argument(settings_text, f"step {kind}")
            if not isinstance(settings, dict):
                raise UsageError(f"the settings of step {kind} must be a JSON object")
        steps.append({"type": kind.strip(), "settings": settings})
    if not steps:
        raise UsageError("give at least one STEP (or --from-file)")
    return steps


async def _create(args: argparse.Namespace) -> int:
    steps = parse_steps(args.steps, args.from_file)
    async with client(args) as api:
        pipeline = await api.create_pipeline(steps)
        if args.name:
            pipeline = await api.save_pipeline(pipeline.pipeline_id, args.name)
        line = f"created {pipeline.pipeline_id}"
        if args.publish:
            version = await api.create_pipeline_version(pipeline.pipeline_id)
            line += f" (published version {version.version})"
    print(line)
    return EXIT_OK


async def _publish(args: argparse.Namespace) -> int:
    async with client(args) as api:
        version = await api.create_pipeline_version(args.pipeline_id, args.description)
    print(f"published {args.pipeline_id} version {version.version}")
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    async with client(args) as api:
        listing = await api.list_pipelines(
            saved_only=not args.all, include_archived=args.archived, limit=args.limit
        )
    if args.json:
        rows = [
            {
                "pipeline_id": p.pipeline_id,
                "name": p.name,
                "steps": [s.get("type") for s in p.steps],
                "active_version": p.active_version,
                "archived": p.archived,
            }
            for p in listing.pipelines
        ]
        print(json.dumps({"pipelines": rows, "total": listing.total}, indent=2))
        return EXIT_OK
    headers = ("pipeline", "name", "steps", "version", "archived")
    data = [
        (
            p.pipeline_id,
            p.name or "",
            " -> ".join(str(s.get("type")) for s in p.steps),
            str(p.active_version or "draft"),
            "yes" if p.archived else "",
        )
        for p in listing.pipelines
    ]
    console = rich_console(args)
    if console is None:
        for row in data:
            print("\t".join(row))
        print(f"{listing.total} pipelines")
        return EXIT_OK
    from rich.markup import escape
    from rich.table import Table

    table = Table(*headers, title=f"{listing.total} pipelines", title_justify="left")
    for row in data:
        table.add_row(*(escape(cell) for cell in row))  # server text is not markup
    console.print(table)
    return EXIT_OK
