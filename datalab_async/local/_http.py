"""HTTP plumbing shared by the local server's handlers.

FastAPI-shaped errors (``{"detail": "..."}`` and the 422 list form), a collector of validation
errors with typed field readers for JSON bodies, query strings and form fields, and small
response helpers. Nothing here knows about pipelines.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
from aiohttp import web

__all__ = [
    "ApiError",
    "Handler",
    "Loc",
    "RequestValidationError",
    "Route",
    "Validation",
    "error_response",
    "is_url",
    "json_response",
    "not_found",
    "page_params",
    "path_int",
    "read_json_object",
    "retry_after_headers",
]

Loc = tuple[str | int, ...]

_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


class ApiError(Exception):
    """An error answer: ``status`` with body ``{"detail": detail}``."""

    def __init__(
        self, status: int, detail: Any, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail if isinstance(detail, str) else f"HTTP {status}")
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


class RequestValidationError(ApiError):
    """A 422 with FastAPI's list of ``{type, loc, msg, input}`` entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(422, errors)
        self.errors = errors


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.frozen
class Route:
    """One row of the routing table.

    ``api`` routes need the API key and get faults injected; ``counted`` routes show in stats.
    """

    method: str
    path: str
    handler: Handler
    name: str | None = None
    api: bool = True
    counted: bool = True


def json_response(payload: Any, *, status: int = 200) -> web.Response:
    """A JSON response with ``application/json`` content type."""
    return web.json_response(payload, status=status)


def error_response(
    status: int, detail: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``{"detail": detail}`` with the given status and headers."""
    return web.json_response({"detail": detail}, status=status, headers=headers)


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (at least 1) plus the exact ``retry-after-ms``."""
    seconds = max(0.0, seconds)
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(round(seconds * 1000)),
    }


class Validation:
    """Collects validation errors; each reader returns the value or ``None`` when invalid.

    ``text=True`` readers parse query-string / form values (always strings); otherwise the
    source is a decoded JSON object and types are checked strictly (``True`` is not an int).
    """

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, loc: Loc, type_: str, msg: str, input_: Any = None, **ctx: Any) -> None:
        """Record one error."""
        entry: dict[str, Any] = {"type": type_, "loc": list(loc), "msg": msg, "input": input_}
        if ctx:
            entry["ctx"] = ctx
        self.errors.append(entry)

    def raise_if_any(self) -> None:
        """Raise a 422 if anything was recorded."""
        if self.errors:
            raise RequestValidationError(self.errors)

    def _missing(self, src: Mapping[str, Any], name: str, loc: Loc, required: bool) -> bool:
        """True when the field is absent (or null); records an error if it is required."""
        if name in src and src[name] is not None:
            return False
        if required:
            self.add((*loc, name), "missing", "Field required", None)
        return True

    def string(
        self,
        src: Mapping[str, Any],
        name: str,
        loc: Loc,
        *,
        required: bool = False,
        max_length: int | None = None,
        min_length: int = 0,
        choices: Sequence[str] | None = None,
    ) -> str | None:
        """A string field."""
        if self._missing(src, name, loc, required):
            return None
        value = src[name]
        where = (*loc, name)
        if not isinstance(value, str):
            self.add(where, "string_type", "Input should be a valid string", value)
            return None
        if choices is not None and value not in choices:
            expected = " or ".join(repr(c) for c in choices)
            self.add(where, "enum", f"Input should be {expected}", value, expected=expected)
            return None
        if max_length is not None and len(value) > max_length:
            self.add(
                where,
                "string_too_long",
                f"String should have at most {max_length} characters",
                value,
                max_length=max_length,
            )
            return None
        if len(value) < min_length:
            self.add(
                where,
                "string_too_short",
                f"String should have at least {min_length} characters",
                value,
                min_length=min_length,
            )
            return None
        return value

    def integer(
        self,
        src: Mapping[str, Any],
        name: str,
        loc: Loc,
        *,
        required: bool = False,
        ge: int | None = None,
        le: int | None = None,
        text: bool = False,
    ) -> int | None:
        """An integer field (from text: a decimal string)."""
        if self._missing(src, name, loc, required):
            return None
        value = src[name]
        where = (*loc, name)
        number: int
        if text and isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                self.add(
                    where,
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer",
                    value,
                )
                return None
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            self.add(where, "int_type", "Input should be a valid integer", value)
            return None
        if ge is not None and number < ge:
            self.add(
                where,
                "greater_than_equal",
                f"Input should be greater than or equal to {ge}",
                value,
                ge=ge,
            )
            return None
        if le is not None and number > le:
            self.add(
                where,
                "less_than_equal",
                f"Input should be less than or equal to {le}",
                value,
                le=le,
            )
            return None
        return number

    def boolean(
        self, src: Mapping[str, Any], name: str, loc: Loc, *, default: bool, text: bool = False
    ) -> bool:
        """A boolean field; text accepts pydantic's spellings (true/false/1/0/yes/no/on/off)."""
        if self._missing(src, name, loc, False):
            return default
        value = src[name]
        if isinstance(value, bool):
            return value
        if text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            self.add(
                (*loc, name),
                "bool_parsing",
                "Input should be a valid boolean, unable to interpret input",
                value,
            )
            return default
        self.add((*loc, name), "bool_type", "Input should be a valid boolean", value)
        return default

    def mapping(
        self, src: Mapping[str, Any], name: str, loc: Loc, *, required: bool = False
    ) -> dict[str, Any] | None:
        """A JSON object field."""
        if self._missing(src, name, loc, required):
            return None
        value = src[name]
        if not isinstance(value, dict):
            self.add((*loc, name), "dict_type", "Input should be a valid dictionary", value)
            return None
        return value

    def array(
        self,
        src: Mapping[str, Any],
        name: str,
        loc: Loc,
        *,
        required: bool = False,
        min_items: int = 0,
        max_items: int | None = None,
    ) -> list[Any] | None:
        """A JSON array field with length bounds."""
        if self._missing(src, name, loc, required):
            return None
        value = src[name]
        where = (*loc, name)
        if not isinstance(value, list):
            self.add(where, "list_type", "Input should be a valid list", value)
            return None
        if len(value) < min_items:
            noun = "item" if min_items == 1 else "items"
            self.add(
                where,
                "too_short",
                f"List should have at least {min_items} {noun} after validation, not {len(value)}",
                value,
                field_type="List",
                min_length=min_items,
                actual_length=len(value),
            )
            return None
        if max_items is not None and len(value) > max_items:
            self.add(
                where,
                "too_long",
                f"List should have at most {max_items} items after validation, not {len(value)}",
                value,
                field_type="List",
                max_length=max_items,
                actual_length=len(value),
            )
            return None
        return value

    def int_list(self, items: list[Any], loc: Loc) -> list[int]:
        """Every element of ``items`` must be an int."""
        out: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, int) and not isinstance(item, bool):
                out.append(item)
            else:
                self.add((*loc, i), "int_type", "Input should be a valid integer", item)
        return out

    def str_list(self, items: list[Any], loc: Loc) -> list[str]:
        """Every element of ``items`` must be a string."""
        out: list[str] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(item)
            else:
                self.add((*loc, i), "string_type", "Input should be a valid string", item)
        return out


async def read_json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a FastAPI-shaped 422.

    ``optional``: an empty body reads as ``{}`` (FastAPI's ``Body(default={})``).
    """
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise RequestValidationError(
            [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
        )
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        position = getattr(exc, "pos", 0)
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", position],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": getattr(exc, "msg", str(exc))},
                }
            ]
        ) from exc
    if not isinstance(value, dict):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": value,
                }
            ]
        )
    return value


def path_int(request: web.Request, name: str) -> int:
    """An integer path parameter, or a 422 like FastAPI's ``int`` path params."""
    check = Validation()
    value = check.integer(request.match_info, name, ("path",), required=True, text=True)
    check.raise_if_any()
    assert value is not None
    return value


def not_found(what: str) -> ApiError:
    """A 404 ``{"detail": "<what> not found"}``."""
    return ApiError(404, f"{what} not found")


def page_params(request: web.Request, *, default_limit: int, max_limit: int) -> tuple[int, int]:
    """``limit`` (1..max_limit) and ``offset`` (>= 0) query parameters."""
    check = Validation()
    limit = check.integer(request.query, "limit", ("query",), ge=1, le=max_limit, text=True)
    offset = check.integer(request.query, "offset", ("query",), ge=0, text=True)
    check.raise_if_any()
    return (default_limit if limit is None else limit), (offset or 0)


def is_url(value: str, *, allow_reference: bool) -> bool:
    """An http(s) URL, or (``allow_reference``) a Files API ``datalab://file-...`` reference."""
    if allow_reference and re.fullmatch(r"datalab://file-[A-Za-z0-9_-]+", value):
        return True
    return re.match(r"https?://[^\s/]+", value) is not None
