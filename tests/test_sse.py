"""The pure SSE decoder: WHATWG parsing rules, fed whole, byte by byte and in random chunkings."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from datalab_async._protocol.sse import ServerSentEvent, SSEDecoder


def decode_all(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def byte_by_byte(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


def random_chunks(raw: bytes, rng: random.Random) -> list[bytes]:
    chunks, i = [], 0
    while i < len(raw):
        size = rng.randint(0, 7)  # empty chunks included on purpose
        chunks.append(raw[i : i + size])
        i += size
    return chunks


# A stream exercising every rule at once: BOM, all three line endings, comments, multi-line data,
# multi-byte UTF-8, ids (persisting, reset, NUL refused), retry, unknown fields, pings without data.
COMPLEX = (
    "\ufeff: hello comment\r\n"
    "retry: 2500\n"
    'data: {"event": "workflow_started", "task_id": "t1"}\r\n'
    "\r\n"
    "event: ping\n"
    "\n"
    "id: 7\r"
    "data: première ligne — ✓\r"
    "data:   deux espaces gardés\r"
    "data\r"
    "\r"
    ":comment without space\n"
    "event: custom\n"
    "unknown: field\n"
    "data: 𝄞 clef\n"
    "\n"
    "id: bad\x00id\n"
    "data: keeps id 7\n"
    "\n"
    "id\n"
    "retry: 12x\n"
    "data: id reset\n"
    "\n"
).encode()

COMPLEX_EXPECTED = [
    ServerSentEvent(
        event="message",
        data='{"event": "workflow_started", "task_id": "t1"}',
        id="",
        retry=2500,
    ),
    ServerSentEvent(
        event="message", data="première ligne — ✓\n  deux espaces gardés\n", id="7", retry=None
    ),
    ServerSentEvent(event="custom", data="𝄞 clef", id="7"),
    ServerSentEvent(event="message", data="keeps id 7", id="7"),
    ServerSentEvent(event="message", data="id reset", id=""),
]


def test_complex_stream_whole() -> None:
    assert decode_all([COMPLEX]) == COMPLEX_EXPECTED


def test_complex_stream_byte_by_byte() -> None:
    assert decode_all(byte_by_byte(COMPLEX)) == COMPLEX_EXPECTED


@pytest.mark.parametrize("seed", range(40))
def test_complex_stream_random_chunkings(seed: int) -> None:
    rng = random.Random(seed)
    assert decode_all(random_chunks(COMPLEX, rng)) == COMPLEX_EXPECTED


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent(data="a")]
    assert decoder.feed(b"data: b\n\ndata: c\n\ndata: d") == [
        ServerSentEvent(data="b"),
        ServerSentEvent(data="c"),
    ]
    assert decoder.close() == []  # "d" never got its blank line


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_each_line_ending(eol: str) -> None:
    raw = f"event: e{eol}data: x{eol}data: y{eol}{eol}".encode()
    expected = [ServerSentEvent(event="e", data="x\ny")]
    assert decode_all([raw]) == expected
    assert decode_all(byte_by_byte(raw)) == expected


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # If the LF after a chunk-final CR were taken as a second line end, the blank line would
    # dispatch "x" early and "y" would become a separate event.
    assert decode_all([b"data: x\r", b"\ndata: y\r", b"\n\r", b"\n"]) == [
        ServerSentEvent(data="x\ny")
    ]


def test_cr_then_cr_is_a_blank_line() -> None:
    assert decode_all([b"data: x\r", b"\r"]) == [ServerSentEvent(data="x")]


def test_split_utf8_sequences() -> None:
    text = "data: 日本語 🎉 ü\n\n"
    raw = text.encode()
    for cut in range(1, len(raw)):
        assert decode_all([raw[:cut], raw[cut:]]) == [ServerSentEvent(data="日本語 🎉 ü")]


def test_bom_only_stripped_at_stream_start_even_when_split() -> None:
    bom = "\ufeff".encode()
    raw = bom + b"data: a\n\n" + bom + b"data: b\n\n"
    expected = [ServerSentEvent(data="a")]
    # the second BOM makes the field name "\ufeffdata", an unknown field: ignored
    assert decode_all([raw]) == expected
    assert decode_all(byte_by_byte(raw)) == expected


def test_invalid_utf8_becomes_replacement_char() -> None:
    assert decode_all([b"data: a\xffb\n\n"]) == [ServerSentEvent(data="a\ufffdb")]
    # a truncated sequence at the end of the stream is replaced, not lost silently
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n\ndata: \xe6\x97") == [ServerSentEvent(data="x")]
    assert decoder.close() == []


def test_comments_and_no_data_events_do_not_dispatch() -> None:
    raw = b": keep-alive\n\nevent: ping\n\nid: 3\n\nretry: 10\n\n"
    decoder = SSEDecoder()
    assert decoder.feed(raw) == []
    assert decoder.last_event_id == "3"
    assert decoder.retry == 10


def test_field_value_rules() -> None:
    raw = b"data:no-space\ndata:  two-spaces\ndata\ndata:\n\n"
    assert decode_all([raw]) == [ServerSentEvent(data="no-space\n two-spaces\n\n")]


def test_empty_data_line_still_dispatches() -> None:
    assert decode_all([b"data:\n\n"]) == [ServerSentEvent(data="")]


def test_event_type_resets_between_events() -> None:
    raw = b"event: a\ndata: 1\n\ndata: 2\n\n"
    assert [e.event for e in decode_all([raw])] == ["a", "message"]


def test_event_type_without_data_does_not_leak_into_next_event() -> None:
    raw = b"event: ping\n\ndata: 1\n\n"
    assert decode_all([raw]) == [ServerSentEvent(event="message", data="1")]


def test_close_drops_unterminated_event_and_is_idempotent() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: partial\n") == [ServerSentEvent(data="complete")]
    assert decoder.close() == []
    assert decoder.closed
    assert decoder.close() == []
    with pytest.raises(RuntimeError):
        decoder.feed(b"data: late\n\n")


def test_close_applies_final_id_line_without_newline() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: x\n\nid: 42")
    decoder.close()
    assert decoder.last_event_id == "42"


def test_json_helper() -> None:
    (event,) = decode_all([b'data: {"a": [1, 2]}\n\n'])
    assert event.json() == {"a": [1, 2]}
    with pytest.raises(ValueError):
        ServerSentEvent(data="not json").json()


def test_long_line_fed_byte_by_byte_is_linear_enough() -> None:
    payload = "x" * 200_000
    raw = f"data: {payload}\n\n".encode()
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for i in range(0, len(raw)):
        events.extend(decoder.feed(raw[i : i + 1]))
    assert events == [ServerSentEvent(data=payload)]


def test_dify_shaped_stream_random_chunkings() -> None:
    frames = [
        b'data: {"event": "workflow_started", "task_id": "t", "workflow_run_id": "r"}\n\n',
        b"event: ping\n\n",
        b'data: {"event": "node_started", "data": {"node_id": "n1", "title": "\xc3\xa9"}}\n\n',
        b'data: {"event": "workflow_finished", "data": {"status": "succeeded"}}\n\n',
    ]
    raw = b"".join(frames)
    rng = random.Random(1234)
    for _ in range(25):
        events = decode_all(random_chunks(raw, rng))
        assert [e.json()["event"] for e in events] == [
            "workflow_started",
            "node_started",
            "workflow_finished",
        ]
        assert events[1].json()["data"]["title"] == "é"
