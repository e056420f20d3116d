"""The one reconciliation: did a run POST whose answer we never read create an execution?

Used by every path that may have sent a run without learning its execution id: the client's
check after an ambiguous failure (a 500/502/504 or a connection lost after the body was sent),
a folder job resuming a document whose write-ahead *intent* has no execution id, and the
Temporal submit activity retried after its worker died. Each such document is an
:class:`Intent`: what an execution of it would say in its ``input_config`` and when its POST
started. The pipeline's executions are listed newest first and decided on by :func:`decide`.

The rules, for each intent:

1. Only executions created inside the window count: at or after the POST's start on the
   server's clock, less ``clock_skew`` seconds (the ``Date`` header has one-second resolution,
   and the start time may have been read by the client's clock). An item without a readable
   ``created`` counts as inside.
2. Executions this job already knows (it recorded their ids, or this client created them and
   registered them) are ruled out.
3. Where the execution's ``input_config`` says what it ran on (``filename``, ``file_size``,
   ``file_url``), an execution of another file is ruled out.
4. None left: nothing was created; the document may be sent.
   Exactly one left, matching on every field the intent expects, and claimed by no other
   intent of the same check: it is the lost answer; it is adopted.
   Anything else: the document is *ambiguous*; it fails naming the candidate ids and is not
   sent (``datalab-async run --resubmit-ambiguous`` sends such documents again on the user's
   word).

Reading the list: pages of :data:`PAGE_SIZE`, newest first, until a page holds nothing inside
the oldest intent's window or is short (a list only roughly ordered is still read whole), at
most :data:`MAX_PAGES` pages; a window that cannot be read to its end makes every intent
ambiguous rather than sendable. Pure: no I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

import attrs

from .http import http_date

__all__ = [
    "MAX_PAGES",
    "PAGE_SIZE",
    "Intent",
    "Verdict",
    "WindowScan",
    "compare_input",
    "created_at",
    "decide",
    "expected_input",
    "server_offset",
]

PAGE_SIZE = 100
MAX_PAGES = 20


@attrs.frozen
class Intent:
    """One run POST whose outcome is unknown.

    ``key`` names it for the caller (a document's relative path); ``expected`` holds what an
    execution of it reports in ``input_config`` (see :func:`expected_input`); ``since`` is the
    window's start in server epoch seconds (the POST's start, skew already subtracted).
    """

    key: str
    expected: Mapping[str, Any]
    since: float


@attrs.frozen
class Verdict:
    """What to do with one intent: ``send`` it, ``adopt`` ``execution_id``, or report it
    ``ambiguous`` naming ``candidates`` (``why`` says what could not be decided)."""

    action: Literal["send", "adopt", "ambiguous"]
    execution_id: str | None = None
    candidates: tuple[str, ...] = ()
    why: str = ""


def expected_input(
    *, filename: str | None = None, file_size: int | None = None, file_url: str | None = None
) -> dict[str, Any]:
    """The ``input_config`` fields an execution of this document reports (those known)."""
    if file_url is not None:
        return {"file_url": file_url}
    expected: dict[str, Any] = {}
    if filename is not None:
        expected["filename"] = filename
    if file_size is not None:
        expected["file_size"] = file_size
    return expected


def compare_input(input_config: object, expected: Mapping[str, Any]) -> bool | None:
    """None: ruled out (the server says it ran on something else); True: matches on every
    expected field; False: cannot tell (the server does not report them all)."""
    config = input_config if isinstance(input_config, Mapping) else {}
    matched = 0
    for key, value in expected.items():
        seen = config.get(key)
        if seen is None:
            continue
        if seen != value:
            return None
        matched += 1
    return bool(expected) and matched == len(expected)


def created_at(item: Mapping[str, Any]) -> float | None:
    """An execution's ``created`` as epoch seconds (None when missing or unreadable)."""
    raw = item.get("created")
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def server_offset(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to add to our wall clock to get the server's, from a response's ``Date``."""
    raw = next((v for k, v in headers.items() if k.lower() == "date"), None)
    when = http_date(raw)
    if when is None:
        return None
    return when - (time.time() if now is None else now)


class WindowScan:
    """Collects listing pages (newest first) for a set of intents; says when to stop.

    Feed each page's raw items to :meth:`add`; it returns True while another page is needed.
    """

    def __init__(self, intents: Sequence[Intent]) -> None:
        self.intents = list(intents)
        self.oldest = min((i.since for i in self.intents), default=float("inf"))
        self.items: list[Mapping[str, Any]] = []
        self.pages = 0
        self.complete = not self.intents

    def add(self, items: Sequence[Any], *, page_size: int = PAGE_SIZE) -> bool:
        """Keep the page's items inside the window; True when the next page must be read."""
        self.pages += 1
        in_window = 0
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("execution_id"), str):
                continue
            created = created_at(item)
            if created is not None and created < self.oldest:
                continue
            in_window += 1
            self.items.append(item)
        if len(items) < page_size or in_window == 0:
            self.complete = True
            return False
        if self.pages >= MAX_PAGES:
            return False
        return True


def decide(
    intents: Sequence[Intent],
    items: Iterable[Mapping[str, Any]],
    known: Iterable[Container[str]],
    *,
    complete: bool = True,
) -> dict[str, Verdict]:
    """A :class:`Verdict` per intent key, by the rules in the module docstring.

    ``items``: listed executions (raw JSON objects); ``known``: containers of execution ids
    this job accounts for; ``complete``: False when the window could not be read to its end.
    """
    known = list(known)
    listed = [
        item
        for item in items
        if isinstance(item.get("execution_id"), str)
        and not any(item["execution_id"] in container for container in known)
    ]
    candidates: dict[str, dict[str, bool]] = {}
    for intent in intents:
        mine: dict[str, bool] = {}
        for item in listed:
            created = created_at(item)
            if created is not None and created < intent.since:
                continue
            verdict = compare_input(item.get("input_config"), intent.expected)
            if verdict is not None:
                mine[item["execution_id"]] = verdict
        candidates[intent.key] = mine
    claims: dict[str, int] = {}
    for mine in candidates.values():
        for eid, exact in mine.items():
            if exact:
                claims[eid] = claims.get(eid, 0) + 1
    verdicts: dict[str, Verdict] = {}
    for intent in intents:
        mine = candidates[intent.key]
        ids = tuple(mine)
        if not complete:
            verdicts[intent.key] = Verdict(
                "ambiguous", candidates=ids, why="the list could not be read to its end"
            )
        elif not mine:
            verdicts[intent.key] = Verdict("send")
        elif len(mine) == 1 and next(iter(mine.values())) and claims[ids[0]] == 1:
            verdicts[intent.key] = Verdict("adopt", execution_id=ids[0], candidates=ids)
        else:
            why = (
                "another document of this job matches the same execution"
                if len(mine) == 1 and next(iter(mine.values()))
                else "executions the server cannot tell apart from this document's"
            )
            verdicts[intent.key] = Verdict("ambiguous", candidates=ids, why=why)
    return verdicts
