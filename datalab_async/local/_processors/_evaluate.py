"""Scoring a step result in ``[0, 1]`` from its content, optionally against a rubric."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._common import ProcessingError, page_text, pages_from_result
from ._schema import SchemaResolver, schema_type

__all__ = ["evaluate", "evaluation_details"]


def _leaf_fill(
    schema: Mapping[str, Any], value: Any, resolver: SchemaResolver, depth: int = 0
) -> tuple[float, int]:
    """(filled leaves, total leaves) of ``value`` against an object schema."""
    props = schema.get("properties")
    if not isinstance(props, Mapping) or depth > 12:
        return (1.0 if value not in (None, "", [], {}) else 0.0), 1
    filled, total = 0.0, 0
    for name, sub in props.items():
        try:
            sub_schema = resolver.resolve(sub)
        except ProcessingError:
            continue
        item = value.get(name) if isinstance(value, Mapping) else None
        if schema_type(sub_schema) == "object" and isinstance(
            sub_schema.get("properties"), Mapping
        ):
            f, t = _leaf_fill(sub_schema, item, resolver, depth + 1)
        else:
            f, t = (1.0 if item not in (None, "", [], {}) else 0.0), 1
        filled += f
        total += t
    return filled, total


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _lookup(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return abs(float(expected) - float(actual)) <= 1e-6 * max(1.0, abs(float(expected)))
    if isinstance(expected, str) and isinstance(actual, str):
        return " ".join(expected.lower().split()) == " ".join(actual.lower().split())
    return bool(expected == actual)


Scores = dict[str, float]
Rubric = Mapping[str, Any]


def _text_coverage(result: Mapping[str, Any]) -> tuple[float, str]:
    """Share of processed pages with text (images: a valid size), and the result's text."""
    image = result.get("image")
    if isinstance(image, Mapping):
        ok = all(isinstance(image.get(k), int) and image[k] > 0 for k in ("width", "height"))
        return (1.0 if ok else 0.0), ""
    pages = pages_from_result(result) or []
    text = "\n".join(page_text(p) for p in pages)
    if not pages and isinstance(result.get("markdown"), str):
        text = result["markdown"]
    processed = result.get("pages_processed")
    wanted = len(processed) if isinstance(processed, list) and processed else len(pages)
    metadata = result.get("metadata")
    stats = metadata.get("page_stats") if isinstance(metadata, Mapping) else None
    if isinstance(stats, list) and stats:
        with_text = sum(
            1 for st in stats if isinstance(st, Mapping) and _positive(st.get("text_chars"))
        )
    else:
        with_text = len({p.index for p in pages if page_text(p).strip()})
    return (min(1.0, with_text / wanted) if wanted else 0.0), text


def _convert_scores(result: Mapping[str, Any], rubric: Rubric) -> Scores:
    coverage, text = _text_coverage(result)
    scores = {"text_coverage": coverage}
    terms = rubric.get("required_terms")
    if isinstance(terms, list) and terms:
        lowered = text.lower()
        found = sum(1 for t in terms if str(t).lower() in lowered)
        scores["required_terms"] = found / len(terms)
    return scores


def _extract_scores(result: Mapping[str, Any], rubric: Rubric) -> Scores:
    schema = result.get("extraction_schema")
    extraction = result.get("extraction")
    scores = {"fields_filled": 0.0}
    if isinstance(schema, Mapping):
        resolver = SchemaResolver(schema)
        try:
            root = resolver.resolve(schema)
        except ProcessingError:
            root = {}
        filled, total = _leaf_fill(root, extraction, resolver)
        scores["fields_filled"] = filled / total if total else 0.0
    expected = rubric.get("expected")
    if isinstance(expected, Mapping) and expected:
        hits = sum(
            1 for path, want in expected.items() if _same(want, _lookup(extraction, str(path)))
        )
        scores["accuracy"] = hits / len(expected)
    return scores


def _segment_scores(result: Mapping[str, Any], rubric: Rubric) -> Scores:
    segments = [s for s in result.get("segments") or () if isinstance(s, Mapping)]
    covered = {p for s in segments for p in s.get("pages") or () if isinstance(p, int)}
    processed = result.get("pages_processed")
    expected_pages = set(processed) if isinstance(processed, list) and processed else covered
    scores = {
        "page_coverage": (
            len(covered & expected_pages) / len(expected_pages) if expected_pages else 0.0
        )
    }
    names = rubric.get("expected_segments")
    if isinstance(names, list) and names:
        present = {str(s.get("name", "")).lower() for s in segments if s.get("pages")}
        found = sum(1 for n in names if str(n).lower() in present)
        scores["expected_segments"] = found / len(names)
    return scores


def _custom_scores(result: Mapping[str, Any], rubric: Rubric) -> Scores:
    words = result.get("word_count")
    return {"has_text": 1.0 if isinstance(words, int) and words > 0 else 0.0}


def _fill_scores(result: Mapping[str, Any], rubric: Rubric) -> Scores:
    filled_fields = result.get("filled_fields")
    unmatched = result.get("unmatched_fields")
    n_filled = len(filled_fields) if isinstance(filled_fields, Mapping) else 0
    n_total = n_filled + (len(unmatched) if isinstance(unmatched, list) else 0)
    return {"fields_filled": n_filled / n_total if n_total else 0.0}


_SCORERS: dict[str, Callable[[Mapping[str, Any], Rubric], Scores]] = {
    "convert": _convert_scores,
    "extract": _extract_scores,
    "segment": _segment_scores,
    "custom": _custom_scores,
    "fill": _fill_scores,
}


def evaluation_details(
    step_type: str, result: Mapping[str, Any], rubric: Mapping[str, Any] | None
) -> dict[str, float]:
    """The named component scores (each in ``[0, 1]``) that :func:`evaluate` combines.

    convert: ``text_coverage`` (share of processed pages with text; images: a valid size) and,
    with ``rubric["required_terms"]``, ``required_terms`` (share found). extract: ``fields_filled``
    (share of schema leaves filled) and, with ``rubric["expected"]`` (dotted path -> value),
    ``accuracy``. segment: ``page_coverage`` and, with ``rubric["expected_segments"]``,
    ``expected_segments``. custom: ``has_text``. fill: ``fields_filled``.
    """
    scorer = _SCORERS.get(step_type.strip().lower())
    if scorer is None or not isinstance(result, Mapping):
        return {}
    return scorer(result, rubric if isinstance(rubric, Mapping) else {})


def evaluate(step_type: str, result: dict[str, Any], rubric: dict[str, Any] | None) -> float:
    """A deterministic score in ``[0, 1]`` for a step result.

    The weighted mean of :func:`evaluation_details`; ``rubric["weights"]`` maps component names
    to weights (default 1 each; unknown names and bad weights are ignored). Rounded to 4 places.
    """
    scores = evaluation_details(step_type, result, rubric)
    if not scores:
        return 0.0
    weights_value = rubric.get("weights") if isinstance(rubric, Mapping) else None
    weights = weights_value if isinstance(weights_value, Mapping) else {}
    total = 0.0
    weighted = 0.0
    for name, score in scores.items():
        weight = weights.get(name, 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            weight = 1.0
        total += weight
        weighted += weight * score
    if total <= 0:
        return 0.0
    return round(min(1.0, max(0.0, weighted / total)), 4)
