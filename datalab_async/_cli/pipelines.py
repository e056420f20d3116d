"""``datalab-async pipelines list | create | publish``."""

from __future__ import annotations

import argparse
import json
import re
import textwrap
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

__all__ = [
    "SCHEMA_SETTINGS",
    "STEP_SPEC_HELP",
    "add_parser",
    "parse_step",
    "parse_step_list",
    "parse_steps",
]

CREATE_EXAMPLES = """\
examples (the schema file is in a checkout of datalab_async):
  datalab-async pipelines create convert extract:examples/invoice_schema.json --name Invoices
  datalab-async pipelines create convert segment"""


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
        description=textwrap.fill(
            f"Create a pipeline from its steps. Each STEP is {STEP_SPEC_HELP} Without --name "
            "the pipeline is an unnamed draft, which 'pipelines list' shows only with --all."
        ),
        epilog=CREATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


#: Steps that read a schema from their settings, and the setting it goes in (``TYPE:FILE``).
SCHEMA_SETTINGS = {"extract": "page_schema", "segment": "segmentation_schema"}

#: How to write steps, for the ``--help`` of every command that takes them.
STEP_SPEC_HELP = (
    "TYPE (convert, segment, ...), TYPE:SCHEMA.json (extract: a JSON Schema file, its "
    "page_schema; segment: its segmentation_schema) or TYPE=SETTINGS (a JSON object, or "
    "@file.json). extract needs a schema."
)

_STEP_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _read_json_argument(text: str, what: str) -> Any:
    try:
        if text.startswith("@"):
            return json.loads(Path(text[1:]).read_text(encoding="utf-8"))
        return json.loads(text)
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {text[1:]!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{what}: invalid JSON: {exc}") from None


def parse_step(spec: str) -> dict[str, Any]:
    """One step object from ``TYPE``, ``TYPE:SCHEMA.json`` or ``TYPE=SETTINGS`` (UsageError if
    bad). A bare ``extract`` is refused: every run of it would fail for want of a schema."""
    match = _STEP_TYPE.match(spec.strip())
    kind = match.group() if match else ""
    rest = spec.strip()[len(kind) :]
    if not kind or (rest and rest[0] not in "=:"):
        raise UsageError(f"step {spec!r}: expected {STEP_SPEC_HELP}")
    settings: Any = {}
    if rest.startswith("="):
        settings = _read_json_argument(rest[1:], f"step {kind}")
        if not isinstance(settings, dict):
            raise UsageError(f"the settings of step {kind} must be a JSON object")
    elif rest.startswith(":"):
        if kind not in SCHEMA_SETTINGS:
            raise UsageError(
                f"step {spec!r}: only {' and '.join(SCHEMA_SETTINGS)} take a schema file "
                f"(TYPE:SCHEMA.json); give {kind}'s settings as {kind}=SETTINGS"
            )
        schema = _read_json_argument("@" + rest[1:], f"step {kind}'s schema")
        settings = {SCHEMA_SETTINGS[kind]: schema}
    elif kind == "extract":
        raise UsageError(
            "step extract needs a schema (the fields to extract): extract:SCHEMA.json, a JSON "
            "Schema file such as examples/invoice_schema.json, or extract=@SETTINGS.json with "
            "a page_schema"
        )
    return {"type": kind, "settings": settings}


def parse_step_list(text: str) -> list[dict[str, Any]]:
    """Steps from one comma-separated argument: ``convert,extract:schema.json``."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise UsageError(f"no steps in {text!r}: expected e.g. convert,extract:schema.json")
    return [parse_step(part) for part in parts]


def parse_steps(specs: Sequence[str], from_file: str | None) -> list[dict[str, Any]]:
    """Step objects from step arguments (:func:`parse_step`) and/or a JSON file (UsageError
    if bad)."""
    steps: list[dict[str, Any]] = []
    if from_file is not None:
        loaded = _read_json_argument("@" + from_file, "--from-file")
        if not isinstance(loaded, list) or not all(isinstance(s, dict) for s in loaded):
            raise UsageError("--from-file must hold a JSON list of step objects")
        steps.extend(loaded)
    steps.extend(parse_step(spec) for spec in specs)
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
    if not args.name:
        print(
            "(unnamed: 'pipelines list' shows it with --all; --name NAME saves it under a name)"
        )
    return EXIT_OK


async def _publish(args: argparse.Namespace) -> int:
    async with client(args) as api:
        version = await api.create_pipeline_version(args.pipeline_id, args.description)
    print(f"published {args.pipeline_id} version {version.version}")
    return EXIT_OK


async def _list(args: argparse.Namespace) -> int:
    hidden = 0
    async with client(args) as api:
        listing = await api.list_pipelines(
            saved_only=not args.all, include_archived=args.archived, limit=args.limit
        )
        if not args.all:  # say how many unnamed drafts the listing leaves out
            every = await api.list_pipelines(
                saved_only=False, include_archived=args.archived, limit=1
            )
            hidden = max(0, every.total - listing.total)
    hint = (
        f"{hidden} unnamed draft pipeline{'s' if hidden != 1 else ''} hidden: --all lists them"
        if hidden
        else ""
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
        document = {"pipelines": rows, "total": listing.total, "unnamed_hidden": hidden}
        print(json.dumps(document, indent=2))
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
        print(f"{listing.total} pipelines" + (f" ({hint})" if hint else ""))
        return EXIT_OK
    from rich.markup import escape
    from rich.table import Table

    table = Table(*headers, title=f"{listing.total} pipelines", title_justify="left")
    for row in data:
        table.add_row(*(escape(cell) for cell in row))  # server text is not markup
    console.print(table)
    if hint:
        console.print(hint, style="dim", markup=False)
    return EXIT_OK
