"""Pure protocol layer: request building, validation, classification, Retry-After, models."""

from __future__ import annotations

import email.utils
import json
from pathlib import Path

import pytest

import datalab_async
from datalab_async import (
    AuthenticationError,
    ExecutionStatus,
    InvalidInputError,
    NotFoundError,
    PipelineExecution,
    QuotaExceededError,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    StepStatus,
    ValidationError,
)
from datalab_async._models import structure
from datalab_async._protocol import pipelines as proto
from datalab_async._protocol.errors import classify_status
from datalab_async._protocol.http import (
    Request,
    RetryMode,
    parse_http_date,
    parse_retry_after,
    retry_delay,
)
from datalab_async._protocol.validation import check_file, validate_page_range


def test_public_all_matches_public_names() -> None:
    # ("@py_*" names come from pytest rewriting the package that ships our pytest plugin.)
    public = {n for n in dir(datalab_async) if not n.startswith(("_", "@"))}
    exported = set(datalab_async.__all__)
    assert exported <= public | {"__version__"}
    modules = {"local", "dify", "temporal", "webhooks", "web"}
    assert public - exported <= modules, public - exported


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    p = tmp_path / "doc.pdf"
    p.write_bytes(b"%PDF-1.4 hello")
    return p


def test_run_request_fields_and_retry_mode(pdf: Path) -> None:
    req = proto.run_pipeline(
        "pl_abc",
        file_path=pdf,
        page_range="0, 2-4",
        output_format="markdown",
        run_evals=True,
        skip_cache=False,
        webhook_url="https://hooks.example.com/x",
        version=0,
    )
    assert req.method == "POST"
    assert req.path == "/api/v1/pipelines/pl_abc/run"
    assert req.retry is RetryMode.CREATE
    assert req.multipart is not None
    assert dict(req.multipart.fields) == {
        "page_range": "0,2-4",
        "output_format": "markdown",
        "run_evals": "true",
        "skip_cache": "false",
        "webhook_url": "https://hooks.example.com/x",
        "version": "0",
    }
    part = req.multipart.file
    assert part is not None and part.field == "file" and part.filename == "doc.pdf"
    assert part.content_type == "application/pdf" and part.size == pdf.stat().st_size


def test_run_request_omits_unset_options() -> None:
    req = proto.run_pipeline("pl_abc", file_url="https://example.com/a.pdf")
    assert req.multipart is not None
    assert req.multipart.fields == (("file_url", "https://example.com/a.pdf"),)
    assert req.multipart.file is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one"),
        ({"file_url": "https://x/a.pdf", "file": b"x", "filename": "a.pdf"}, "exactly one"),
        ({"file_url": "ftp://x/a.pdf"}, "http"),
        ({"file_url": "https://x/a.pdf", "page_range": "1-"}, "page_range"),
        ({"file_url": "https://x/a.pdf", "page_range": "4-2"}, "backwards"),
        ({"file_url": "https://x/a.pdf", "version": -1}, "version"),
        ({"file_url": "https://x/a.pdf", "output_format": "pdf"}, "output_format"),
        ({"file": b"abc"}, "filename"),
        ({"file": b"", "filename": "a.pdf"}, "empty"),
        ({"file": b"abc", "filename": "a.exe"}, "unsupported"),
    ],
)
def test_run_request_refuses_bad_input(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        proto.run_pipeline("pl_abc", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", " ", "a/b", "..", "pl_..x", "a b", "pl\n"])
def test_ids_are_checked(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        proto.get_pipeline(bad)


def test_check_file_reasons(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        check_file(tmp_path / "missing.pdf")
    with pytest.raises(InvalidInputError, match="directory"):
        check_file(tmp_path)
    (tmp_path / "empty.pdf").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        check_file(tmp_path / "empty.pdf")
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(InvalidInputError, match="unsupported"):
        check_file(tmp_path / "a.txt")
    assert check_file(tmp_path / "a.txt", allow_any_file_type=True)[1] == 2
    big = tmp_path / "big.pdf"
    with big.open("wb") as f:
        f.truncate(200 * 1024 * 1024 + 1)
    with pytest.raises(InvalidInputError, match="limit"):
        check_file(big)


def test_page_range_accepts_documented_syntax() -> None:
    assert validate_page_range("0,2-4") == "0,2-4"
    assert validate_page_range("7") == "7"


def test_classify_string_detail_and_422_list() -> None:
    err = classify_status(404, {}, b'{"detail": "Execution not found"}', method="GET", url="u")
    assert isinstance(err, NotFoundError)
    assert "Execution not found" in str(err)
    body = {"detail": [{"loc": ["body", "version"], "msg": "must be >= 0", "type": "value_error"}]}
    err = classify_status(422, {}, json.dumps(body).encode())
    assert isinstance(err, ValidationError)
    assert "body.version: must be >= 0" in str(err)
    assert err.detail == body["detail"]


def test_classify_other_envelopes() -> None:
    err = classify_status(401, {"x-request-id": "r1"}, b'{"error": "Invalid API key"}')
    assert isinstance(err, AuthenticationError) and "Invalid API key" in str(err)
    assert err.request_id == "r1"
    err = classify_status(529, {}, b"<html>overloaded</html>")
    assert isinstance(err, ServerError) and err.retryable and "overloaded" in str(err)
    assert isinstance(classify_status(429, {}, b""), RateLimitError)
    assert issubclass(QuotaExceededError, RateLimitError)


def test_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    when = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after({"Retry-After": when}, now=1_000_000) == pytest.approx(10.0)
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_retry_decisions() -> None:
    policy = RetryPolicy(max_retries=2, jitter=0.0, retry_after_spread=0.0)
    get = Request("GET", "/x", "op")
    post = Request("POST", "/x", "run", retry=RetryMode.CREATE)
    assert retry_delay(get, policy, 0, status=500) == 0.5
    assert retry_delay(get, policy, 1, status=503) == 1.0
    assert retry_delay(get, policy, 2, status=503) is None  # out of retries
    assert retry_delay(get, policy, 0, status=404) is None
    assert retry_delay(post, policy, 0, status=500) is None  # may have created an execution
    assert retry_delay(post, policy, 0, status=429, headers={"Retry-After": "2"}) == 2.0
    assert retry_delay(post, policy, 0, connection_error=True, sent=True) is None
    assert retry_delay(post, policy, 0, connection_error=True, sent=False) == 0.5
    assert retry_delay(get, policy, 0, status=429, retryable_hint=False) is None
    capped = RetryPolicy(max_retry_after=5, retry_after_spread=0.0)
    assert retry_delay(get, capped, 0, status=429, headers={"Retry-After": "900"}) == 5.0
    assert retry_delay(get, RetryPolicy.disabled(), 0, status=503) is None


def test_429_with_retry_after_is_bounded_by_time_waited_not_attempts() -> None:
    policy = RetryPolicy(max_retries=2, rate_limit_patience=30, retry_after_spread=0.0)
    get = Request("GET", "/x", "op")
    post = Request("POST", "/x", "run", retry=RetryMode.CREATE)
    told = {"Retry-After": "5"}
    assert retry_delay(get, policy, 10, status=429, headers=told) == 5.0  # past max_retries
    assert retry_delay(post, policy, 10, status=429, headers=told) == 5.0  # refused: no duplicate
    assert retry_delay(get, policy, 10, status=429, headers=told, rate_limited_wait=26) is None
    assert retry_delay(get, policy, 10, status=429) is None  # no Retry-After: counted as usual
    assert retry_delay(get, policy, 0, status=429, headers=told, retryable_hint=False) is None
    assert retry_delay(get, RetryPolicy.disabled(), 0, status=429, headers=told) is None
    spread = RetryPolicy(retry_after_spread=0.1)
    waits = {retry_delay(get, spread, 0, status=429, headers=told) for _ in range(40)}
    assert all(w is not None and 5.0 <= w <= 5.5 for w in waits) and len(waits) > 1


def test_backoff_has_jitter_and_cap() -> None:
    policy = RetryPolicy(backoff_base=1, backoff_max=4, jitter=0.25)
    delays = {policy.backoff(10) for _ in range(50)}
    assert all(3.0 <= d <= 5.0 for d in delays) and len(delays) > 1


def test_execution_model_tolerates_unknowns() -> None:
    ex = structure(
        {
            "execution_id": "pex_1",
            "pipeline_id": "pl_1",
            "pipeline_version": 0,
            "status": "paused_for_review",
            "brand_new_field": {"x": 1},
            "created": "2026-01-01T10:00:00.123456789Z",
            "steps": [
                {"step_index": 0, "step_type": "convert", "status": "completed"},
                {"step_index": 1, "step_type": "extract", "status": "quarantined"},
            ],
        },
        PipelineExecution,
    )
    assert ex.status.value == "paused_for_review" and not ex.status.known
    assert not ex.is_terminal
    assert ex.steps[0].status is StepStatus.COMPLETED
    assert ex.steps[1].status.value == "quarantined"
    assert ex.created is not None and ex.created.tzinfo is not None
    assert ExecutionStatus("completed_with_errors").is_terminal


def test_model_errors_name_the_field() -> None:
    with pytest.raises(ResponseValidationError) as info:
        structure({"execution_id": "pex_1", "pipeline_id": "pl"}, PipelineExecution, what="get")
    assert "status" in str(info.value)
    with pytest.raises(ResponseValidationError) as info:
        structure(
            {
                "execution_id": "pex_1",
                "pipeline_id": "pl",
                "status": "running",
                "steps": [{"step_index": "zero", "step_type": "convert", "status": "running"}],
            },
            PipelineExecution,
        )
    assert "step_index" in str(info.value)


def test_parse_http_date() -> None:
    from datetime import datetime, timezone

    expected = datetime(2015, 10, 21, 7, 28, tzinfo=timezone.utc)
    assert parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT") == expected
    assert parse_http_date(" Wednesday, 21-Oct-15 07:28:00 GMT ") == expected  # RFC 850 form
    assert parse_http_date("Wed Oct 21 07:28:00 2015") == expected  # asctime: no zone, UTC
    assert parse_http_date("soon") is None and parse_http_date("") is None
