"""Documents and results in object storage, against a real S3 API offline: moto's server on a
free loopback port (no mock of the storage library), and the local Datalab server."""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("obstore")
moto_server = pytest.importorskip("moto.server")

import obstore  # noqa: E402
from obstore.store import S3Store  # noqa: E402

from datalab_async import AsyncDatalabClient, JobControl, RetryPolicy  # noqa: E402
from datalab_async._errors import InvalidInputError, StorageError  # noqa: E402
from datalab_async._folder_manifest import STATE_NAME  # noqa: E402
from datalab_async._storage import open_sink, open_source  # noqa: E402
from datalab_async._storage._object import _profile_provider, parse_object_url  # noqa: E402
from datalab_async.local import LocalDatalab  # noqa: E402
from datalab_async.local.samples import make_pdf  # noqa: E402

from .conftest import stop_after_submitted  # noqa: E402

RUN = "POST /api/v1/pipelines/{pipeline_id}/run"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh bucket, the standard AWS environment pointing at it, and a store for checks."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/{bucket}", method="PUT"))
    store = S3Store(bucket, endpoint=s3_endpoint, client_options={"allow_http": True})
    yield bucket, store


def _keys(store: Any, prefix: str) -> list[str]:
    return sorted(m["path"] for batch in obstore.list(store, prefix) for m in batch)


def _upload(store: Any, n: int, prefix: str = "in/") -> None:
    for i in range(n):
        obstore.put(store, f"{prefix}sub/doc{i}.pdf" if i % 2 else f"{prefix}doc{i}.pdf",
                    make_pdf([f"object document {i}"]))
    obstore.put(store, f"{prefix}notes.txt", b"not a document")


async def test_run_from_s3_to_s3_then_rerun_skips(s3: Any) -> None:
    bucket, store = s3
    _upload(store, 6)
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            summary = await client.process_folder(
                f"s3://{bucket}/in/", pipeline, f"s3://{bucket}/out/", concurrency=3
            )
            assert summary.ok and len(summary.done) == 6, summary
            assert [str(i) for i in summary.ignored] == ["notes.txt (unsupported type .txt)"]
            assert summary.out_dir == f"s3://{bucket}/out/" and summary.manifest_path is None
            keys = _keys(store, "out/")
            assert "out/doc0.pdf/0_convert.json" in keys
            assert "out/sub/doc1.pdf/0_convert.md" in keys
            state = json.loads(bytes(obstore.get(store, f"out/doc0.pdf/{STATE_NAME}").bytes()))
            assert state["event"] == "completed" and state["sha256"].startswith("etag:")
            assert state["execution_id"] and state["size"] > 0
            # A re-run (any machine: nothing local is kept) skips every document.
            again = await client.process_folder(
                f"s3://{bucket}/in/", pipeline, f"s3://{bucket}/out/", concurrency=3
            )
            assert again.ok and len(again.skipped) == 6 and not again.done
        stats = server.stats()
    assert stats["executions_created"] == 6
    assert stats["run_submissions_by_digest_duplicates"] == 0


async def test_interrupted_run_resumes_without_duplicates(s3: Any) -> None:
    bucket, store = s3
    _upload(store, 16)
    src, out = f"s3://{bucket}/in/", f"s3://{bucket}/out/"
    async with LocalDatalab(step_latency=0.05, run_answer_delay=0.2) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        control = JobControl(drain_timeout=10)
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            on_event = stop_after_submitted(control, 4)

            first = await client.process_folder(
                src, pipeline, out, concurrency=4, control=control, on_event=on_event
            )
            assert first.interrupted and len(first.done) < 16
            states = [
                json.loads(bytes(obstore.get(store, k).bytes()))["event"]
                for k in _keys(store, "out/")
                if k.endswith(STATE_NAME)
            ]
            assert "intent" not in states  # every POST on the wire got its answer recorded
            again = await client.process_folder(src, pipeline, out, concurrency=4)
            assert again.ok and len(again.done) + len(again.skipped) == 16
            assert again.resumed or again.skipped
        stats = server.stats()
    assert stats["executions_created"] == 16
    assert stats["run_submissions_by_digest_duplicates"] == 0


async def test_intent_left_by_a_killed_run_is_reconciled_not_resent(s3: Any) -> None:
    """A state object saying ``intent`` (the process died during the POST): the re-run adopts
    the execution that POST created instead of sending the document again."""
    bucket, store = s3
    _upload(store, 2)
    src, out = f"s3://{bucket}/in/", f"s3://{bucket}/out/"
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            await client.process_folder(src, pipeline, out)
            key = f"out/doc0.pdf/{STATE_NAME}"
            record = json.loads(bytes(obstore.get(store, key).bytes()))
            # Rewrite it as the intent written before that POST (no execution id yet).
            execution = await client.get_pipeline_execution(record["execution_id"])
            assert execution.created is not None
            created = execution.created.timestamp()
            intent = {
                "event": "intent",
                "path": "doc0.pdf",
                "config": record["config"],
                "sha256": record["sha256"],
                "size": record["size"],
                "mtime_ns": record["mtime_ns"],
                "started": created - 1,
                "expected": {"filename": "doc0.pdf", "file_size": record["size"]},
            }
            obstore.put(store, key, json.dumps(intent).encode())
            again = await client.process_folder(src, pipeline, out)
            assert again.ok, again
        stats = server.stats()
    assert stats["executions_created"] == 2
    assert stats["run_submissions_by_digest_duplicates"] == 0


async def test_s3_source_to_local_folder_and_presign(s3: Any, tmp_path: Path) -> None:
    bucket, store = s3
    _upload(store, 2)
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            summary = await client.process_paths(
                [f"s3://{bucket}/in/"], pipeline, tmp_path / "out", presign=True
            )
            assert summary.ok and len(summary.done) == 2, summary.failed
            assert (tmp_path / "out" / "doc0.pdf" / "0_convert.json").is_file()
            assert summary.manifest_path is not None and summary.manifest_path.is_file()
            journal = summary.manifest_path.read_text()
            assert '"intent"' in journal and "X-Amz-Signature" not in journal
        stats = server.stats()
    assert stats["executions_created"] == 2


async def test_missing_bucket_and_bad_credentials_fail_before_any_submission(
    s3: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    bucket, store = s3
    _upload(store, 1)
    async with LocalDatalab(step_latency=0.01) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            with pytest.raises(StorageError) as missing:
                await client.process_folder("s3://no-such-bucket-x/in/", pipeline, tmp_path)
            assert "s3://no-such-bucket-x/in/" in str(missing.value)
            assert "bucket does not exist" in str(missing.value)
            with pytest.raises(StorageError) as missing_out:
                await client.process_folder(f"s3://{bucket}/in/", pipeline, "s3://nope-x/o/")
            assert "s3://nope-x/o/" in str(missing_out.value)
            # moto checks credentials once its authentication is switched on.
            _moto_auth(s3_endpoint, on=True)
            try:
                with pytest.raises(StorageError) as refused:
                    await client.process_folder(f"s3://{bucket}/in/", pipeline, tmp_path)
            finally:
                _moto_auth(s3_endpoint, on=False)
            assert f"s3://{bucket}/in/" in str(refused.value)
            assert "credentials were refused" in str(refused.value)
            assert "testing-secret-value" not in str(refused.value)
            assert "testing-secret-value" not in repr(open_source([f"s3://{bucket}/in/"]))
        stats = server.stats()
    assert stats["requests_by_endpoint"].get(RUN, 0) == 0


def _moto_auth(endpoint: str, *, on: bool) -> None:
    value = b"0" if on else b"inf"
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=value,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request)


def test_url_parsing_and_configuration_errors() -> None:
    assert parse_object_url("s3://bkt/a/b/").prefix == "a/b/"
    assert parse_object_url("gs://bkt").scheme == "gs"
    assert parse_object_url("abfs://container/x").scheme == "az"
    for bad in ("s3://key:secret@bkt/x", "s3://b/x?sig=1", "s3:///x", "ftp://x/y"):
        with pytest.raises(StorageError) as err:
            parse_object_url(bad)
        assert "secret" not in str(err.value)
    with pytest.raises(InvalidInputError):
        open_source(["s3://a/x/", "s3://b/y/"])
    with pytest.raises(InvalidInputError):
        open_source(["folder"], presign=True)
    assert type(open_sink("gs://bkt/out/")).__name__ == "ObjectSink"
    assert type(open_sink("file:///tmp/out")).__name__ == "LocalSink"


async def test_gcs_and_azure_configuration_errors_name_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_APPLICATION_CREDENTIALS"]
    names.append("AZURE_STORAGE_ACCOUNT_NAME")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", "/nonexistent/key.json")
    for url in ("gs://bkt/in/", "az://container/in/"):
        with pytest.raises(StorageError) as err:
            await open_source([url]).check()
        assert url in str(err.value)


def test_importing_the_package_does_not_import_obstore() -> None:
    code = "import sys, datalab_async; print('obstore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_upload_retries_reopen_the_object(s3: Any) -> None:
    """A refused run POST (503) is sent again with the object's bytes read anew: a one-shot
    stream could not be replayed."""
    bucket, store = s3
    _upload(store, 6)
    async with LocalDatalab(step_latency=0.01, error_503_rate=0.4, retry_after=0, seed=7) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        # 40% of every request refused: enough retries that polls and result fetches, refused
        # too, always get through (the point is the upload's replay).
        retry = RetryPolicy(max_retries=12, backoff_base=0.01, backoff_max=0.05)
        async with AsyncDatalabClient(
            api_key=server.api_key, base_url=server.url, retry=retry
        ) as client:
            summary = await client.process_folder(
                f"s3://{bucket}/in/", pipeline, f"s3://{bucket}/out/", concurrency=2
            )
        assert summary.ok and len(summary.done) == 6, summary.failed
        stats = server.stats()
    assert stats["requests_by_endpoint"][RUN] > 6  # some were refused and sent again
    assert stats["executions_created"] == 6


def test_cli_run_s3_to_s3_and_a_missing_bucket(s3: Any) -> None:
    bucket, store = s3
    _upload(store, 2)
    command = [sys.executable, "-m", "datalab_async", "run", "demo", "--local", "--json"]
    done = subprocess.run(
        command + [f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["out_dir"] == f"s3://{bucket}/out/" and report["manifest"] is None
    assert len(_keys(store, "out/")) >= 2 * 3  # per document: json, md, state
    missing = subprocess.run(
        command + ["s3://no-such-bucket-y/in/", "--out", f"s3://{bucket}/out2/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert "s3://no-such-bucket-y/in/" in missing.stderr
    assert "bucket does not exist" in missing.stderr


async def test_map_pipeline_takes_object_urls(s3: Any) -> None:
    bucket, store = s3
    _upload(store, 3)
    sources = [f"s3://{bucket}/in/doc0.pdf", f"s3://{bucket}/in/sub/doc1.pdf"]
    async with LocalDatalab(step_latency=0.01, error_503_rate=0.3, retry_after=0, seed=3) as srv:
        pipeline = srv.create_pipeline_sync(["convert"])
        async with AsyncDatalabClient(api_key=srv.api_key, base_url=srv.url) as client:
            async with client.map_pipeline(pipeline, sources) as outcomes:
                done = [outcome async for outcome in outcomes]
    assert sorted(o.source.name for o in done) == ["doc0.pdf", "doc1.pdf"]
    assert all(o.ok for o in done), [o.describe_failure() for o in done]


async def test_an_aws_profile_is_used_when_no_keys_are_set(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("boto3")
    bucket, store = s3
    _upload(store, 1)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[bench]\naws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "bench")
    provider = _profile_provider()
    assert provider is not None and "profilesecret" not in repr(provider)
    source = open_source([f"s3://{bucket}/in/"])
    await source.check()
    found = [d.relative async for d in source.documents([])]
    assert found == ["doc0.pdf"]
    assert "profilesecret" not in repr(source)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_killed_at_random_moments_never_submits_twice(s3: Any, signum: int) -> None:
    """issue 18's rule on an object-store output: ``run`` from S3 to S3 interrupted (Ctrl-C)
    or killed at random moments, then run to the end: no document submitted twice."""
    from .test_interrupts import ServerThread

    bucket, store = s3
    n = 32
    for i in range(n):
        obstore.put(store, f"in/doc-{i:03d}.pdf", make_pdf([f"killed run document {i}"]))
    with ServerThread(step_latency=0.2, run_answer_delay=0.15, seed=11) as server:
        pipeline = server.server.create_pipeline_sync(["convert"])
        command = [sys.executable, "-m", "datalab_async", "run", pipeline, f"s3://{bucket}/in/"]
        command += ["--out", f"s3://{bucket}/out/", "--plain", "--concurrency", "4"]
        command += server.flags()
        rng = random.Random(signum)
        codes = []
        for _ in range(4):
            child = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            time.sleep(rng.uniform(0.8, 2.0))  # startup (~0.5 s) and a moment of the job
            child.send_signal(signum)
            try:
                child.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                pytest.fail("the interrupted run did not end within 30 s")
            codes.append(child.returncode)
        final = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=120)
        summary = json.loads(final.stdout)
        stats = server.call(server.server.stats)
    assert stats["run_submissions_by_digest_duplicates"] == 0, (stats, codes)
    finished = summary["counts"]["done"] + summary["counts"]["skipped"]
    ambiguous = [f for f in summary["failed"] if "ambiguous" in f["reason"].lower()]
    assert finished + len(ambiguous) == n, summary
    assert stats["executions_created"] == n, stats
    assert any(code != 0 for code in codes), "no run was interrupted: nothing was tested"
