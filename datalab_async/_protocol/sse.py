"""A pure, incremental ``text/event-stream`` decoder (no I/O).

Follows the WHATWG HTML "server-sent events" parsing rules: the stream is UTF-8 (a leading BOM
is dropped, invalid sequences become U+FFFD), lines end with CRLF, LF or a lone CR, a line
starting with ``:`` is a comment, ``data`` lines accumulate (joined with ``\\n``), a blank line
dispatches the event, and an event without any ``data`` line is not dispatched at all. Bytes can
arrive in any chunking, down to one byte at a time, including a CRLF or a multi-byte UTF-8
sequence split across two chunks.

::

    decoder = SSEDecoder()
    for chunk in chunks:
        for event in decoder.feed(chunk):
            ...
    decoder.close()  # end of stream: an unterminated event is dropped, as the spec says

The other direction, for servers that relay events to a browser: ``encode_sse`` builds one
frame and ``encode_comment`` a keep-alive comment; both are pure and round-trip through
``SSEDecoder``.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

import attrs

__all__ = ["EventTooLargeError", "SSEDecoder", "ServerSentEvent", "encode_comment", "encode_sse"]

_LINE_END = re.compile(r"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]+")
_FIELD_UNSAFE = re.compile(r"[\r\n\x00]")


@attrs.frozen
class ServerSentEvent:
    """One dispatched event.

    ``event`` is the type (``"message"`` when the stream gave none), ``data`` the joined ``data``
    lines, ``id`` the last event id seen on the stream so far (it persists across events, as in a
    browser's ``lastEventId``), ``retry`` the reconnection delay in milliseconds if this event's
    block carried a valid ``retry`` field.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """``data`` decoded as JSON (raises ``ValueError`` when it is not JSON)."""
        return json.loads(self.data)


class EventTooLargeError(ValueError):
    """One line, or one event's ``data``, grew past the decoder's ``max_event_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a server-sent event is over {limit} bytes")
        self.limit = limit


class SSEDecoder:
    """Incremental decoder: ``feed(bytes) -> [ServerSentEvent]``, then ``close()``.

    ``retry`` and ``last_event_id`` expose the stream-level state a reconnecting client needs.
    ``max_event_bytes`` bounds what the decoder holds: an unterminated line, or the ``data``
    of an event not yet dispatched, longer than that (in decoded characters, which is bytes for
    the ASCII of JSON) raises ``EventTooLargeError`` and ends the decoder.
    """

    def __init__(self, *, max_event_bytes: int | None = None) -> None:
        self._limit = max_event_bytes
        self._partial_size = 0
        self._data_size = 0
        # utf-8-sig drops one leading BOM even when it is split across chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._partial: list[str] = []  # pieces of the current, unterminated line
        self._skip_lf = False  # the last text ended in CR: a following LF belongs to it
        self._data: list[str] = []
        self._has_data = False
        self._event_type = ""
        self._block_retry: int | None = None
        self._closed = False
        self.last_event_id = ""
        self.retry: int | None = None

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode ``chunk`` and return the events it completed (often none)."""
        if self._closed:
            raise RuntimeError("feed() after close()")
        try:
            return self._feed_text(self._decoder.decode(chunk, False))
        except EventTooLargeError:
            self._closed = True
            self._partial.clear()
            self._reset_block()
            raise

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the stream and return any events still completed by it.

        A truncated UTF-8 sequence becomes U+FFFD. An event whose terminating blank line never
        arrived is discarded, per the specification. Calling ``close()`` twice is harmless.
        """
        if self._closed:
            return []
        events = self._feed_text(self._decoder.decode(b"", True))
        self._closed = True
        # The final unterminated line is still a line, but it cannot complete an event on its
        # own (only an empty line dispatches), so processing it only updates state.
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
            self._process_line(line)
        self._reset_block()
        return events

    def _feed_text(self, text: str) -> list[ServerSentEvent]:
        if not text:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(text):
            piece = text[start : match.start()]
            if self._partial:
                self._partial.append(piece)
                line = "".join(self._partial)
                self._partial.clear()
                self._partial_size = 0
            else:
                line = piece
            self._check(len(line))
            event = self._process_line(line)
            if event is not None:
                events.append(event)
            start = match.end()
            if match.group() == "\r" and start == len(text):
                self._skip_lf = True
        if start < len(text):
            rest = text[start:]
            self._partial.append(rest)
            self._partial_size += len(rest)
            self._check(self._partial_size)
        return events

    def _check(self, size: int) -> None:
        if self._limit is not None and size > self._limit:
            raise EventTooLargeError(self._limit)

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            self._check(self._data_size)
            self._has_data = True
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry":
            if _DIGITS.fullmatch(value):
                self.retry = self._block_retry = int(value)
        # Any other field name is ignored.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_data:
            self._reset_block()
            return None
        event = ServerSentEvent(
            event=self._event_type or "message",
            data="\n".join(self._data),
            id=self.last_event_id,
            retry=self._block_retry,
        )
        self._reset_block()
        return event

    def _reset_block(self) -> None:
        self._data.clear()
        self._data_size = 0
        self._has_data = False
        self._event_type = ""
        self._block_retry = None


def encode_sse(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One ``text/event-stream`` frame (UTF-8, LF line ends, ending in a blank line).

    ``data`` may span lines: each line becomes its own ``data:`` line, which a receiver joins
    back with ``\\n`` (CR and CRLF line ends in ``data`` arrive as ``\\n``). ``event`` and ``id``
    must be single-line (``id`` also without NUL); ``retry`` is the reconnection delay in ms.
    """
    lines: list[str] = []
    if event is not None:
        if _FIELD_UNSAFE.search(event):
            raise ValueError("an SSE event type cannot contain CR, LF or NUL")
        lines.append(f"event: {event}")
    if id is not None:
        if _FIELD_UNSAFE.search(id):
            raise ValueError("an SSE id cannot contain CR, LF or NUL")
        lines.append(f"id: {id}")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError("retry must be a non-negative number of milliseconds")
        lines.append(f"retry: {retry}")
    lines.extend(f"data: {line}" for line in _LINE_END.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """A comment frame (``: text``), ignored by receivers: a keep-alive for idle streams."""
    return "".join(f": {line}\n" for line in _LINE_END.split(text)).encode("utf-8") + b"\n"
