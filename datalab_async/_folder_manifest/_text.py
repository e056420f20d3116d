"""Text shared by the folder job and the Temporal activities: error reasons, JSON lines,
printable names."""

from __future__ import annotations

import json
from typing import Any

from .._models import PipelineExecution

# -- shared by the folder job and the Temporal activities ------------------------------------


def json_line(data: Any) -> str:
    """``data`` as one JSON line. Readable UTF-8, except when a string holds a lone surrogate
    (a file name that is not valid UTF-8, as ``os.listdir`` returns it): that line is written
    with ``\\u`` escapes, which read back as the same name."""
    line = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(data, separators=(",", ":"))
    return line + "\n"


def describe_error(error: BaseException) -> str:
    """``Type: message``, printable whatever the message holds (undecodable file-name bytes
    appear as ``\\xNN``)."""
    text = str(error)
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return printable(described)


def printable(text: str) -> str:
    """``text`` with any lone surrogate (an undecodable byte of a file name) as ``\\xNN``."""
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def execution_failure(execution: PipelineExecution) -> str:
    steps = "; ".join(
        f"step {s.step_index} ({s.step_type}): {s.error_message or s.status}"
        for s in sorted(execution.failed_steps, key=lambda s: s.step_index)
    )
    reason = f"execution {execution.execution_id} ended {execution.status}"
    return f"{reason}: {steps}" if steps else reason
