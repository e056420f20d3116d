"""Running one step: settings checked, the handler picked, every failure a ProcessingError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._readers import DocumentError
from ._common import Job, ProcessingError
from ._convert import convert
from ._custom import custom
from ._extract import extract
from ._fill import fill
from ._segment import segment

__all__ = ["STEP_TYPES", "run_step"]

#: Step types :func:`run_step` implements.
STEP_TYPES = ("convert", "extract", "segment", "custom", "fill")


def run_step(
    step_type: str,
    data: bytes,
    filename: str,
    settings: dict[str, Any],
    *,
    page_range: str | None,
    output_format: str | None,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Run one pipeline step on a document and return its JSON-ready result.

    Raises :class:`ProcessingError` for unsupported step types, bad settings and unreadable,
    corrupt or oversized documents; no other exception escapes.
    """
    handler = _HANDLERS.get(step_type.strip().lower())
    if handler is None:
        raise ProcessingError(f"unsupported step type {step_type!r}")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise ProcessingError("step settings must be a JSON object")
    job = Job(data, filename, settings, page_range, output_format, previous)
    try:
        return handler(job)
    except ProcessingError:
        raise
    except DocumentError as err:
        raise ProcessingError(str(err)) from err
    except Exception as err:  # a bug or an input we did not foresee: fail the step, not the server
        raise ProcessingError(
            f"{step_type} failed on {filename!r}: {type(err).__name__}: {err}"
        ) from err


_HANDLERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "convert": convert,
    "extract": extract,
    "segment": segment,
    "custom": custom,
    "fill": fill,
}
