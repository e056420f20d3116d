"""JSON schemas for ``extract``: loading, ``$ref``/``anyOf`` resolution, checks, typed values."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ._common import ProcessingError

__all__ = ["SchemaResolver", "coerce", "items_schema", "load_schema", "schema_type"]


_TRUE = frozenset(
    {"yes", "y", "true", "t", "1", "on", "checked", "x", "paid", "approved", "signed"}
)
_FALSE = frozenset({"no", "n", "false", "f", "0", "off", "unchecked", "none", "unpaid", "pending"})
_NUMBER_RE = re.compile(r"-?\d[\d.,'\u00a0 ]*\d|-?\d")


def _parse_number(value: str) -> float | None:
    match = _NUMBER_RE.search(value)
    if not match:
        return None
    rest = value[: match.start()] + value[match.end() :]
    if any(c.isdigit() for c in rest):
        return None
    text = re.sub(r"['\u00a0 ]", "", match.group(0))
    negative = text.startswith("-") or bool(re.search(r"\(\s*[^\d]*$", value[: match.start()]))
    text = text.lstrip("-")
    if "," in text and "." in text:
        decimal = "." if text.rfind(".") > text.rfind(",") else ","
        text = text.replace("," if decimal == "." else ".", "").replace(decimal, ".")
    elif "," in text:
        parts = text.split(",")
        text = (
            text.replace(",", ".")
            if len(parts) == 2 and len(parts[1]) != 3
            else text.replace(",", "")
        )
    elif text.count(".") > 1:
        text = text.replace(".", "")
    try:
        number = float(text)
    except ValueError:
        return None
    return -number if negative else number


def schema_type(schema: Mapping[str, Any]) -> str:
    """The schema's type (the first non-null one), guessed from its keywords if absent."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    if "enum" in schema:
        return "enum"
    return "string"


def coerce(value: str, schema: Mapping[str, Any]) -> Any:
    """``value`` typed per ``schema``, or None when it does not fit."""
    value = value.strip().strip('"').strip()
    if not value:
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        wanted = value.lower()
        for option in enum:
            if str(option).lower() == wanted:
                return option
        return None
    kind = schema_type(schema)
    if kind == "string":
        return value
    if kind in ("number", "integer"):
        number = _parse_number(value)
        if number is None:
            return None
        if kind == "integer":
            return int(number) if number.is_integer() else None
        return number
    if kind == "boolean":
        word = value.lower().rstrip(".")
        return True if word in _TRUE else False if word in _FALSE else None
    if kind == "array":
        items = items_schema(schema)
        parts = [p.strip() for p in re.split(r"[;,]", value) if p.strip()]
        typed = [coerce(p, items) for p in parts]
        kept = [t for t in typed if t is not None]
        return kept or None
    return None


def items_schema(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema of an array's items (strings when not given)."""
    items = schema.get("items")
    return items if isinstance(items, Mapping) else {"type": "string"}


class SchemaResolver:
    """Resolves local ``$ref`` and ``anyOf``/``oneOf`` against a root schema."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: Any, depth: int = 0) -> Mapping[str, Any]:
        """``schema`` with its ``$ref`` followed and a single non-null ``anyOf`` merged in."""
        if not isinstance(schema, Mapping):
            raise ProcessingError(
                "invalid page_schema: every property must be a JSON schema object"
            )
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if depth > 16 or not ref.startswith("#/"):
                raise ProcessingError(f"invalid page_schema: unsupported $ref {ref!r}")
            node: Any = self.root
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(node, Mapping) or part not in node:
                    raise ProcessingError(f"invalid page_schema: $ref {ref!r} points nowhere")
                node = node[part]
            merged = (
                {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
                if isinstance(node, Mapping)
                else node
            )
            return self.resolve(merged, depth + 1)
        any_of = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(any_of, list) and "type" not in schema:
            options = [o for o in any_of if isinstance(o, Mapping) and o.get("type") != "null"]
            if options:
                merged = {
                    **self.resolve(options[0], depth + 1),
                    **{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")},
                }
                return merged
        return schema

    def check(self, schema: Mapping[str, Any], path: str, depth: int = 0) -> None:
        """Raise :class:`ProcessingError` if ``schema`` (at ``path``) is not usable."""
        if depth > 12:
            raise ProcessingError("invalid page_schema: nested too deeply")
        kind = schema_type(schema)
        if kind not in (
            "string",
            "number",
            "integer",
            "boolean",
            "array",
            "object",
            "enum",
            "null",
        ):
            raise ProcessingError(
                f"invalid page_schema: {path or 'schema'} has unknown type {kind!r}"
            )
        if kind == "object":
            props = schema.get("properties")
            if not isinstance(props, Mapping) or not props:
                where = path or "the schema"
                raise ProcessingError(
                    f"invalid page_schema: {where} needs a non-empty 'properties' object"
                )
            for name, sub in props.items():
                self.check(self.resolve(sub), f"{path}.{name}" if path else str(name), depth + 1)
        elif kind == "array" and "items" in schema:
            self.check(self.resolve(schema["items"]), f"{path}[]", depth + 1)


def load_schema(settings: Mapping[str, Any], key: str = "page_schema") -> dict[str, Any]:
    """The JSON schema in ``settings[key]`` (object or JSON text), checked; the raw object."""
    raw = settings.get(key)
    if raw is None or raw == "":
        raise ProcessingError(
            f"extract needs settings.{key}: a JSON schema (object or JSON string)"
        )
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ProcessingError(f"{key} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ProcessingError(f"invalid {key}: expected a JSON object")
    resolver = SchemaResolver(raw)
    top = resolver.resolve(raw)
    if schema_type(top) != "object":
        raise ProcessingError(f"invalid {key}: the top-level schema must be of type 'object'")
    resolver.check(top, "")
    return raw
