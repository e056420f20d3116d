"""Deterministic document processors behind the local server's pipeline steps.

``run_step(step_type, data, filename, settings, page_range=..., output_format=..., previous=...)``
returns the step's JSON result or raises :class:`ProcessingError` (its text becomes the step's
``error_message``). One module per step (:mod:`._convert`, :mod:`._extract`, :mod:`._segment`,
:mod:`._custom`, :mod:`._fill`), over shared pieces: :mod:`._common` (jobs, pages, page ranges),
:mod:`._render` (output formats), :mod:`._matching` (labels to names), :mod:`._schema` (JSON
schemas) and :mod:`._evaluate` (scores). Step types:

``convert``
    The document (see :mod:`.._readers` for formats) as ``markdown`` / ``html`` / ``json`` /
    ``chunks`` per ``output_format`` (comma-separated for several; default markdown), with
    ``page_count``, ``pages_processed`` and ``metadata``. Images report their format and pixel
    size under ``image``. Settings: ``paginate`` (bool: page separators in Markdown),
    ``max_pages`` (int).
``extract``
    Fills ``settings["page_schema"]`` (a JSON schema, dict or JSON string) from the converted
    text: ``Label: value`` lines and two-column table rows are matched to property names, titles
    and descriptions, values typed per the schema (string, number, integer, boolean, enum, arrays
    of strings/numbers from lists or comma lists, arrays of objects from tables, nested objects from
    sections or prefixed labels). Result: ``extraction``, ``extraction_schema``, ``citations``
    (field -> page), ``missing_fields``, ``page_count``.
``segment``
    Sections by headings (or one per page when there are none); with
    ``settings["segmentation_schema"]`` (names and descriptions) sections are assigned to the
    closest named segment. Result: ``segments`` of ``{name, pages, text_preview}``.
``custom``
    No user code runs locally: text statistics of the converted document (words, lines,
    characters, blocks, optional ``settings["keywords"]`` counts) and the settings echoed back.
``fill``
    Fills blank form fields (``Label:`` or ``Label: ____`` lines, two-column table rows with an
    empty value) from ``settings["field_data"]`` and returns the filled Markdown.

A step given ``previous`` (an earlier ``convert`` result holding ``json``, ``chunks``, ``html``,
paginated or single-page ``markdown``) reads its pages instead of the file, as that convert's
``page_range`` left them; any other ``previous`` is ignored and the file is converted again.
:func:`evaluate` scores a result in ``[0, 1]`` from its content, optionally weighted by a rubric.
"""

from __future__ import annotations

from .._readers import MAX_PAGES
from ._common import OUTPUT_FORMATS, ProcessingError, parse_output_formats, parse_page_range
from ._evaluate import evaluate, evaluation_details
from ._steps import STEP_TYPES, run_step

__all__ = [
    "MAX_PAGES",
    "OUTPUT_FORMATS",
    "STEP_TYPES",
    "ProcessingError",
    "evaluate",
    "evaluation_details",
    "parse_output_formats",
    "parse_page_range",
    "run_step",
]
