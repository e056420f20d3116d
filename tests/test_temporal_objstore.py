"""Temporal without a shared folder: documents in S3 (moto's server), results to S3, workers
started in an empty working directory. History holds only URLs, ids, statuses, counters."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("obstore")
pytest.importorskip("temporalio")

import obstore  # noqa: E402

from datalab_async import AsyncDatalabClient  # noqa: E402
from datalab_async._folder_manifest import STATE_NAME  # noqa: E402
from datalab_async.local import LocalDatalab  # noqa: E402
from datalab_async.local.samples import make_pdf  # noqa: E402
from datalab_async.temporal import BulkRunInput, start_bulk_run  # noqa: E402

from . import test_objstore as _objstore  # noqa: E402
from . import test_temporal as _temporal  # noqa: E402

# The fixtures of those modules (a moto S3 server, a Temporal dev server), shared here.
s3_endpoint = _objstore.s3_endpoint
s3 = _objstore.s3
temporal_address = _temporal.temporal_address
temporal = _temporal.temporal
queue = _temporal.queue
_release_temporal_clients = _temporal._release_temporal_clients
_keys = _objstore._keys

pytestmark = pytest.mark.skipif(
    not os.access(_temporal.TEMPORAL, os.X_OK), reason="no temporal CLI"
)


@pytest.fixture
def empty_cwd(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "worker-cwd"
    folder.mkdir()
    yield folder
    assert not any(folder.iterdir()), "the worker wrote to its working directory"


def _worker(
    address: str, task_queue: str, server: LocalDatalab, cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATALAB_API_KEY": server.api_key, "DATALAB_HOST": server.url}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "datalab_async", "temporal", "worker"]
            + ["--address", address, "--task-queue", task_queue, "--concurrency", "4"],
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_bulk_run_from_s3_to_s3_with_no_shared_folder(
    s3: Any,
    temporal: Any,
    temporal_address: str,
    queue: str,
    empty_cwd: Path,
    tmp_path: Path,
) -> None:
    bucket, store = s3
    n = 8
    for i in range(n):
        obstore.put(store, f"in/doc{i:02d}.pdf", make_pdf([f"temporal object document {i}"]))
    obstore.put(store, "in/readme.txt", b"skip me")
    src, out = f"s3://{bucket}/in/", f"s3://{bucket}/out/"
    async with LocalDatalab(step_latency=0.05) as server:
        pipeline = server.create_pipeline_sync(["convert"])
        worker = _worker(temporal_address, queue, server, empty_cwd, tmp_path / "worker.log")
        try:
            job = BulkRunInput(pipeline, [src], out, concurrency=3, heartbeat_timeout=5.0)
            handle = await start_bulk_run(
                temporal, job, workflow_id=f"s3-{queue}", task_queue=queue
            )
            result = await asyncio.wait_for(handle.result(), 120)
            assert result.ok and result.done == n, (result, (tmp_path / "worker.log").read_text())
            assert result.listing is not None and result.listing.startswith(f"s3://{bucket}/out/")
            ignored = f"out/.datalab-temporal/{result.listing.rsplit('/', 1)[-1]}.ignored.jsonl"
            assert b"readme.txt" in bytes(obstore.get(store, ignored).bytes())
            keys = _keys(store, "out/")
            assert sum(k.endswith("/0_convert.json") for k in keys) == n
            states = [
                json.loads(bytes(obstore.get(store, k).bytes()))
                for k in keys
                if k.endswith(STATE_NAME)
            ]
            assert len(states) == n and {s["event"] for s in states} == {"completed"}
            assert any(k.startswith("out/.datalab-temporal/") for k in keys)

            history = await handle.fetch_history()
            raw = b"".join(event.SerializeToString() for event in history.events)
            assert server.api_key.encode() not in raw
            assert os.environ["AWS_SECRET_ACCESS_KEY"].encode() not in raw
            assert b"X-Amz-Signature" not in raw
            assert f"s3://{bucket}/in/doc00.pdf".encode() in raw

            # The same run again under another id: everything already done is skipped.
            again = await start_bulk_run(
                temporal, job, workflow_id=f"s3b-{queue}", task_queue=queue
            )
            second = await asyncio.wait_for(again.result(), 60)
            assert second.ok and second.skipped == n and second.done == 0

            # --presign: the service fetches each object; no signed URL reaches history.
            presigned = BulkRunInput(
                pipeline, [src], f"s3://{bucket}/out-presign/", concurrency=3, presign=True
            )
            third = await start_bulk_run(
                temporal, presigned, workflow_id=f"s3p-{queue}", task_queue=queue
            )
            signed = await asyncio.wait_for(third.result(), 60)
            assert signed.ok and signed.done == n, signed
            history = await third.fetch_history()
            raw = b"".join(event.SerializeToString() for event in history.events)
            assert b"X-Amz-Signature" not in raw and b"X-Amz-Credential" not in raw
            states = [
                bytes(obstore.get(store, k).bytes())
                for k in _keys(store, "out-presign/")
                if k.endswith(STATE_NAME)
            ]
            assert len(states) == n and not any(b"X-Amz-Signature" in x for x in states)
        finally:
            worker.terminate()
            worker.wait(10)
        # And `process_folder` from anywhere agrees: nothing left to do.
        async with AsyncDatalabClient(api_key=server.api_key, base_url=server.url) as client:
            summary = await client.process_folder(src, pipeline, out)
        assert len(summary.skipped) == n and not summary.done
        stats = server.stats()
    assert stats["executions_created"] == 2 * n  # n uploaded, n presigned
    assert stats["run_submissions_by_digest_duplicates"] == 0
