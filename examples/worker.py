"""A long-running asyncio worker: documents in, pipeline results out, safe to stop at any time.

Jobs are ``PIPELINE_ID PATH`` pairs, taken from one of:

  --inbox DIR   documents dropped into DIR/<PIPELINE_ID>/ (write elsewhere, then move them in;
                dot-files and *.part/*.tmp are ignored). Finished documents are moved to
                DIR/.done/<PIPELINE_ID>/ or DIR/.failed/<PIPELINE_ID>/.
  (default)     lines "PIPELINE_ID PATH" on stdin; at end of input the worker finishes what it
                started and exits.

Each document runs through one shared client, at most --concurrency at a time; results land in
OUT/<PIPELINE_ID>/<name>-<hash>/ with one log line per document. Each job folder holds a
manifest (the one ``process_folder`` keeps) recording the execution id as soon as the API has
accepted the document.

On SIGTERM or SIGINT the worker takes no more jobs, gives documents in flight --grace seconds
to finish, then stops waiting on the rest: their execution ids are already recorded, so the next
start resumes them (waits on the same executions) instead of submitting them again. Documents
still uploading when the grace period ends are stopped as soon as their upload is accepted.

Configuration: DATALAB_API_KEY and DATALAB_HOST. To try it offline, run a local server::

    python -m datalab_async.local --port 8000 --api-key dev --pipeline convert   # prints pl_...
    DATALAB_API_KEY=dev DATALAB_HOST=http://127.0.0.1:8000 \\
        python examples/worker.py --out results <<< "pl_... examples/documents/invoice-0001.pdf"
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from datalab_async import AsyncDatalabClient, DatalabError, FolderEvent

log = logging.getLogger("worker")
JOB_FILE = "job.json"  # present while a job is unfinished
IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload")


@attrs.define(eq=False)
class Job:
    """One document to run: where its state and results live, and how far it got."""

    pipeline_id: str
    path: Path
    folder: Path
    inbox: Path | None = None
    accepted: bool = False  # the API accepted it and the execution id is recorded
    stop_when_accepted: bool = False
    execution_id: str | None = None
    scope: anyio.CancelScope | None = None  # set while process_paths runs

    @classmethod
    def create(cls, out: Path, pipeline_id: str, path: Path, inbox: Path | None = None) -> Job:
        path = path.resolve()
        digest = hashlib.sha256(str(path).encode("utf-8", "surrogatepass")).hexdigest()[:8]
        folder = out / safe_name(pipeline_id) / f"{safe_name(path.name)}-{digest}"
        return cls(pipeline_id, path, folder, inbox)

    @property
    def key(self) -> str:
        return str(self.folder)

    def on_event(self, event: FolderEvent) -> None:
        """Progress from ``process_paths``: note when the execution id is safely recorded."""
        self.execution_id = event.execution_id or self.execution_id
        if event.kind in ("submitted", "resuming"):
            self.accepted = True
            if self.stop_when_accepted and self.scope is not None:
                self.scope.cancel()

    def stop(self) -> None:
        """Stop waiting: now if the execution id is recorded, else once the upload is accepted."""
        if self.accepted and self.scope is not None:
            self.scope.cancel()
        else:
            self.stop_when_accepted = True


def safe_name(text: str) -> str:
    """A file name from arbitrary text (a pipeline id, a document's name)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".")[:120] or "_"


def record_job(job: Job) -> None:
    """Note the job as taken (removed by ``finish_job``): a restart picks it up again."""
    job.folder.mkdir(parents=True, exist_ok=True)
    data = {"pipeline_id": job.pipeline_id, "path": str(job.path)}
    if job.inbox is not None:
        data["inbox"] = str(job.inbox)
    (job.folder / JOB_FILE).write_text(json.dumps(data) + "\n", encoding="utf-8")


def finish_job(job: Job) -> None:
    (job.folder / JOB_FILE).unlink(missing_ok=True)


def unfinished_jobs(out: Path) -> list[Job]:
    """Jobs an earlier run took but did not finish. Running them again is safe: the job's
    manifest says whether to wait on a recorded execution, skip, or submit."""
    jobs = []
    for job_file in sorted(out.glob(f"*/*/{JOB_FILE}")):
        try:
            data = json.loads(job_file.read_text(encoding="utf-8"))
            path = Path(data["path"])
            inbox = Path(data["inbox"]) if data.get("inbox") else None
            jobs.append(Job(str(data["pipeline_id"]), path, job_file.parent, inbox))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignored an unreadable job file: %s", job_file)
    return jobs


# -- intake ----------------------------------------------------------------------------------


async def stdin_jobs(out: Path) -> AsyncIterator[Job]:
    """``PIPELINE_ID PATH`` lines, read by a daemon thread (stdin may be a pipe, file or tty)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)

    def read() -> None:
        try:
            for line in sys.stdin:
                asyncio.run_coroutine_threadsafe(lines.put(line), loop).result()
            asyncio.run_coroutine_threadsafe(lines.put(None), loop).result()
        except Exception:  # the loop has gone: the worker is exiting
            return

    threading.Thread(target=read, name="stdin", daemon=True).start()
    while (line := await lines.get()) is not None:
        parts = line.strip().split(maxsplit=1)
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2:
            log.warning("ignored line (expected PIPELINE_ID PATH): %r", line.strip())
            continue
        yield Job.create(out, parts[0], Path(parts[1]))


async def inbox_jobs(out: Path, inbox: Path, scan_every: float) -> AsyncIterator[Job]:
    """Documents appearing under ``inbox/<PIPELINE_ID>/``, scanned every ``scan_every`` s."""
    while True:
        found = await anyio.to_thread.run_sync(scan_inbox, inbox)
        for pipeline_id, path in found:
            yield Job.create(out, pipeline_id, path, inbox)
        await anyio.sleep(scan_every)


def scan_inbox(inbox: Path) -> list[tuple[str, Path]]:
    found = []
    for folder in sorted(p for p in inbox.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith(".") and not path.name.endswith(
                IGNORED_SUFFIXES
            ):
                found.append((folder.name, path))
    return found


# -- the worker ------------------------------------------------------------------------------


class Worker:
    """Workers pull jobs from a rendezvous channel: a job is taken only by an idle worker."""

    def __init__(self, client: AsyncDatalabClient, args: argparse.Namespace) -> None:
        self.client = client
        self.args = args
        self.out: Path = args.out.resolve()
        self.running: dict[str, Job] = {}  # taken by the intake, maybe not started yet
        self.active = 0  # being processed
        self.stopping = anyio.Event()
        self.intake_scope = anyio.CancelScope()

    async def run(self) -> None:
        """Until the input ends, or a stop signal and the grace period."""
        send, receive = anyio.create_memory_object_stream[Job](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.intake, send)
            tg.start_soon(self.grace_timer)
            async with anyio.create_task_group() as workers:
                with receive:
                    for _ in range(self.args.concurrency):
                        workers.start_soon(self.work, receive.clone())
            tg.cancel_scope.cancel()  # every worker is done: stop the intake and the timer

    async def intake(self, send: MemoryObjectSendStream[Job]) -> None:
        """Feed jobs to idle workers: first the unfinished ones, then new ones. Closing
        ``send`` (end of input, or a stop) lets the workers end after their current job."""
        with send, self.intake_scope:
            pending = await anyio.to_thread.run_sync(unfinished_jobs, self.out)
            sources: list[AsyncIterator[Job]] = [_iterate(pending)]
            if self.args.inbox is not None:
                inbox = self.args.inbox.resolve()
                sources.append(inbox_jobs(self.out, inbox, self.args.scan_every))
            else:
                sources.append(stdin_jobs(self.out))
            for source in sources:
                async for job in source:
                    if job.key in self.running:
                        continue  # already in flight (an inbox scan sees it again)
                    self.running[job.key] = job
                    try:
                        await send.send(job)  # waits for an idle worker
                    except BaseException:
                        del self.running[job.key]
                        raise

    async def work(self, receive: MemoryObjectReceiveStream[Job]) -> None:
        with receive:
            async for job in receive:
                self.active += 1
                try:
                    await self.process(job)
                finally:
                    self.active -= 1
                    del self.running[job.key]

    async def process(self, job: Job) -> None:
        """Run one job through ``process_paths`` (which records, waits, writes and resumes)."""
        started = time.monotonic()
        await anyio.to_thread.run_sync(record_job, job)
        job.scope = scope = anyio.CancelScope()
        try:
            with scope:
                summary = await self.client.process_paths(
                    [job.path],
                    job.pipeline_id,
                    job.folder,
                    concurrency=1,
                    timeout=self.args.timeout,
                    on_event=job.on_event,
                    check_setup=False,  # one document per job: its run POST is the check
                )
        except DatalabError as err:  # e.g. the document has gone, or a bad pipeline id
            log.info("failed   %s %s: %s", job.pipeline_id, job.path, err)
            await self.move(job, ".failed")
            return
        took = time.monotonic() - started
        if scope.cancelled_caught:
            log.info(
                "stopped  %s %s: execution %s is recorded; the next start resumes it",
                job.pipeline_id,
                job.path,
                job.execution_id,
            )
            return
        if summary.failed:
            reason = summary.failed[0].reason
            log.info("failed   %s %s (%.1fs): %s", job.pipeline_id, job.path, took, reason)
            await self.move(job, ".failed")
            return
        verb = "resumed " if summary.resumed else "skipped " if summary.skipped else "done    "
        log.info(
            "%s %s %s -> %s (execution %s, %d pages, %.1fs)",
            verb,
            job.pipeline_id,
            job.path,
            job.folder,
            job.execution_id,
            summary.pages,
            took,
        )
        await self.move(job, ".done")

    async def move(self, job: Job, where: str) -> None:
        """The job is over: forget it, and in inbox mode move the document out of the inbox."""
        await anyio.to_thread.run_sync(finish_job, job)
        if job.inbox is None:
            return
        target = job.inbox / where / job.pipeline_id / job.path.name
        await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        try:
            await anyio.Path(job.path).rename(target)
        except OSError as err:
            log.warning("could not move %s to %s: %s", job.path, target, err)

    def stop(self) -> None:
        """SIGTERM/SIGINT: take no more jobs; the grace period starts."""
        if self.stopping.is_set():
            return
        log.info(
            "stopping: no new jobs; %d in flight get %gs to finish",
            self.active,
            self.args.grace,
        )
        self.stopping.set()
        self.intake_scope.cancel()

    async def grace_timer(self) -> None:
        await self.stopping.wait()
        await anyio.sleep(self.args.grace)
        for job in list(self.running.values()):
            job.stop()


async def _iterate(jobs: list[Job]) -> AsyncIterator[Job]:
    for job in jobs:
        log.info("resuming %s %s (unfinished at the last stop)", job.pipeline_id, job.path)
        yield job


async def main(args: argparse.Namespace) -> int:
    if not os.environ.get("DATALAB_API_KEY"):
        print("set DATALAB_API_KEY (and DATALAB_HOST); see --help", file=sys.stderr)
        return 2
    async with AsyncDatalabClient.from_env() as client:
        worker = Worker(client, args)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        log.info("worker started (concurrency %d, results in %s)", args.concurrency, worker.out)
        await worker.run()
    log.info("worker stopped")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="results and job state folder")
    parser.add_argument("--inbox", type=Path, help="take documents from DIR/<PIPELINE_ID>/")
    parser.add_argument("--concurrency", type=int, default=4, help="documents at once (4)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to finish on stop (30)")
    parser.add_argument("--timeout", type=float, help="seconds per document (default: none)")
    parser.add_argument("--scan-every", type=float, default=1.0, help="inbox scan interval (1)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if args.inbox is not None and not args.inbox.is_dir():
        parser.error(f"--inbox {args.inbox} is not a folder")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    sys.exit(asyncio.run(main(parse_args())))
