"""The one cattrs converter of every response model (Datalab and Dify), and ``Model``.

Every response model derives from ``Model`` and so has an ``extra`` mapping: the converter puts
there each field of the response that the model does not name, so nothing a server sends is lost
and an unknown field never fails validation. Tolerant datetime parsing (ISO 8601 or Unix
seconds, as numbers or strings) and ``OpenEnum`` (enums that keep unknown values) live here too.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from .._errors import ResponseValidationError

__all__ = [
    "Model",
    "OpenEnum",
    "converter",
    "parse_datetime",
    "register_structure_hook",
    "structure",
    "structure_with_extra",
]

T = TypeVar("T")


class OpenEnum(str, enum.Enum):
    """A string enum that accepts values it does not know.

    Servers add statuses over time; an unknown string becomes a pseudo-member (``.value`` is the
    string, ``.known`` is False) instead of failing the whole response.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        return self._name_ in type(self).__members__

    def __str__(self) -> str:
        return str(self.value)


_FRACTION = re.compile(r"(\.\d+)")


@attrs.frozen
class Model:
    """Base of every response model.

    ``extra`` holds the fields of the response this model does not name (their raw JSON values),
    filled by the converter: a field a newer server adds is kept there instead of vanishing.
    It takes no part in equality or ``repr``.
    """

    extra: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, eq=False, repr=False)


def parse_datetime(value: Any) -> datetime:
    """ISO 8601 (``Z``, any fraction length, or no zone) or a UNIX timestamp → aware datetime."""
    if isinstance(value, str):
        return _parse_datetime_text(value)
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = datetime.fromtimestamp(value, tz=timezone.utc)
    else:
        raise ValueError(f"not a datetime: {value!r}")
    if result.tzinfo is None:
        result = result.replace(tzinfo=timezone.utc)
    return result


# Polls see the same timestamps again and again (created, started_at of every step): parse each
# text once. Datetimes are immutable, so sharing them is safe.
@functools.lru_cache(maxsize=4096)
def _parse_datetime_text(value: str) -> datetime:
    if value[:1].isdigit() and value.replace(".", "", 1).strip().isdigit():
        return datetime.fromtimestamp(float(value), tz=timezone.utc)  # Unix seconds as text
    try:
        result = datetime.fromisoformat(value)  # the common case on Python 3.11+
    except ValueError:
        result = _parse_iso_leniently(value)
    if result.tzinfo is None:
        result = result.replace(tzinfo=timezone.utc)
    return result


def _parse_iso_leniently(value: str) -> datetime:
    """``Z`` suffixes and fractions of any length, which older ``fromisoformat`` refuses."""
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], text, count=1)
    return datetime.fromisoformat(text)


def _structure_str(value: Any, _: Any) -> str:
    # Ids sometimes arrive as numbers; containers must not become their str() silently.
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


def structure_with_extra(
    cls: type[T], conv: cattrs.Converter | None = None
) -> Callable[[Any, Any], T]:
    """The structure function of the ``Model`` subclass ``cls``: its fields, plus ``extra``.

    Modules that pre-process a body before structuring (aliases, nesting) build their hook on
    this, so their models keep unknown fields too.
    """
    conv = converter if conv is None else conv
    base = make_dict_structure_fn(cls, conv)
    known = frozenset(a.name for a in attrs.fields(cls) if a.name != "extra")  # type: ignore[arg-type]

    def structure_model(data: Any, target: Any) -> T:
        if type(data) is not dict:  # the common case first: isinstance(Mapping) is slow
            if not isinstance(data, Mapping):
                return base(data, target)  # let the generated function report the type error
            data = dict(data)
        unknown_keys = data.keys() - known
        if not unknown_keys:
            return base(data, target)
        # A server field named "extra" is an unknown field like any other.
        fields = {k: v for k, v in data.items() if k != "extra"} if "extra" in data else data
        obj: T = base(fields, target)
        # Frozen instance: set the one attribute the generated __init__ cannot fill.
        object.__setattr__(obj, "extra", {k: data[k] for k in unknown_keys})
        return obj

    return structure_model


def _is_model(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, Model) and attrs.has(cls)


converter = cattrs.Converter(forbid_extra_keys=False)
converter.register_structure_hook(datetime, lambda v, _: parse_datetime(v))
# A predicate, not a class hook: a class hook for str would also catch OpenEnum (a str subclass).
converter.register_structure_hook_func(lambda t: t is str, _structure_str)
converter.register_structure_hook_factory(
    _is_model, lambda cls, conv: structure_with_extra(cls, conv)
)
converter.register_unstructure_hook(datetime, lambda v: v.isoformat())
converter.register_structure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, OpenEnum), lambda v, t: t(v)
)
converter.register_structure_hook(Any, lambda v, _: v)


def _structure_int_or_str(value: Any, _: Any) -> int | str | None:
    if value is None or isinstance(value, int | str) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected an int or a string, got {value!r}")


converter.register_structure_hook_func(lambda t: t == (int | str | None), _structure_int_or_str)


# Direct hooks for the optional fields every model is full of: cattrs' generic Optional hook
# dispatches on the inner type for each value, which made up a third of structuring an
# execution (the hot path of polling). Same results and errors as the generic path.
def _structure_optional_str(value: Any, _: Any) -> str | None:
    return None if value is None else _structure_str(value, str)


def _structure_optional_datetime(value: Any, _: Any) -> datetime | None:
    return None if value is None else parse_datetime(value)


def _structure_optional_int(value: Any, _: Any) -> int | None:
    return None if value is None else int(value)


def _structure_optional_object(value: Any, _: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return {_structure_str(key, str): item for key, item in value.items()}


converter.register_structure_hook_func(lambda t: t == (str | None), _structure_optional_str)
converter.register_structure_hook_func(
    lambda t: t == (datetime | None), _structure_optional_datetime
)
converter.register_structure_hook_func(lambda t: t == (int | None), _structure_optional_int)
converter.register_structure_hook_func(
    lambda t: t == (dict[str, Any] | None), _structure_optional_object
)


_fast: cattrs.Converter | None = None


def _fast_converter() -> cattrs.Converter:
    # The same hooks without cattrs' detailed validation (markedly faster on the polling hot
    # path); built on first use, and again after a model module loaded later adds hooks.
    global _fast
    if _fast is None:
        _fast = converter.copy(detailed_validation=False)
    return _fast


def register_structure_hook(cls: type[T], func: Callable[[Any, type[T]], T]) -> None:
    """Register ``func`` as the structure hook of ``cls`` on the shared converter.

    Model modules are imported lazily, possibly after the fast copy of the converter was
    made: registering through here makes the next ``structure`` call rebuild that copy.
    """
    global _fast
    converter.register_structure_hook(cls, func)
    _fast = None


def structure(data: Any, cls: type[T], *, what: str | None = None) -> T:
    """Structure ``data`` into ``cls``; failures become ResponseValidationError with the path."""
    try:
        return _fast_converter().structure(data, cls)
    except Exception:  # noqa: BLE001 - re-run with detailed validation to name the field
        pass
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as err:
        if isinstance(err, cattrs.BaseValidationError):
            messages = cattrs.transform_error(err, path=what or cls.__name__)
        else:
            messages = [f"{err} @ {what or cls.__name__}"]
        detail = "; ".join(messages)
        path = messages[0].rsplit(" @ ", 1)[-1] if messages else None
        raise ResponseValidationError(
            f"unexpected response for {what or cls.__name__}: {detail}", path=path, body=data
        ) from err
