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

Offline by default, even with DATALAB_API_KEY set: an embedded local server (living as long
as the worker) runs the jobs, whose PIPELINE_ID is then 'demo' (convert -> extract invoice
fields) or step types such as 'convert' or 'convert,segment'::

    python examples/worker.py --out results <<< "demo examples/documents/invoice-0001.pdf"

(The embedded server's executions end with the worker, so resuming after a restart, above, is
for --remote.)

With --remote it uses the API at DATALAB_HOST with DATALAB_API_KEY (the hosted API, or a
server you started with 'datalab-async serve')::

    DATALAB_API_KEY=... python examples/worker.py --remote --inbox inbox --out results

In stdin mode the exit code is 1 when a job failed (0 when every one was done or skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from datalab_async import AsyncDatalabClient, DatalabError, FolderEvent, InvalidInputError
from datalab_async.local import LocalDatalab

log = logging.getLogger("worker")
INVOICE_SCHEMA = json.loads((Path(__file__).resolve().parent / "invoice_schema.json").read_text())
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


def shown(path: Path) -> str:
    """A path for a log line: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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

    def __init__(
        self,
        client: AsyncDatalabClient,
        args: argparse.Namespace,
        pipeline: Callable[[str], Awaitable[str]],
    ) -> None:
        self.client = client
        self.args = args
        self.pipeline = pipeline  # a job's PIPELINE_ID -> the pipeline to run
        self.failed = 0  # jobs that failed in this run
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
                pipeline_id = await self.pipeline(job.pipeline_id)
                summary = await self.client.process_paths(
                    [job.path],
                    pipeline_id,
                    job.folder,
                    concurrency=1,
                    timeout=self.args.timeout,
                    on_event=job.on_event,
                    check_setup=False,  # one document per job: its run POST is the check
                )
        except DatalabError as err:  # e.g. the document has gone, or a bad pipeline id
            log.info("failed   %s %s: %s", job.pipeline_id, shown(job.path), err)
            self.failed += 1
            await self.move(job, ".failed")
            return
        took = time.monotonic() - started
        if scope.cancelled_caught:
            log.info(
                "stopped  %s %s: execution %s is recorded; the next start resumes it",
                job.pipeline_id,
                shown(job.path),
                job.execution_id,
            )
            return
        if summary.failed:
            reason = summary.failed[0].reason
            log.info(
                "failed   %s %s (%.1fs): %s", job.pipeline_id, shown(job.path), took, reason
            )
            self.failed += 1
            await self.move(job, ".failed")
            return
        verb = "resumed " if summary.resumed else "skipped " if summary.skipped else "done    "
        log.info(
            "%s %s %s -> %s (execution %s, %d page%s, %.1fs)",
            verb,
            job.pipeline_id,
            shown(job.path),
            shown(job.folder),
            job.execution_id,
            summary.pages,
            "" if summary.pages == 1 else "s",
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
            log.warning("could not move %s to %s: %s", shown(job.path), shown(target), err)

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
        log.info(
            "resuming %s %s (unfinished at the last stop)", job.pipeline_id, shown(job.path)
        )
        yield job


def offline_pipelines(server: LocalDatalab) -> Callable[[str], Awaitable[str]]:
    """Offline, a job's PIPELINE_ID names what to run: 'demo' or step types, each pipeline
    created on the embedded server the first time it is named."""
    created: dict[str, str] = {}

    async def pipeline(spec: str) -> str:
        if spec not in created:
            if spec.startswith("pl_"):
                raise InvalidInputError(
                    f"offline, there is no pipeline {spec}: name 'demo' or step types such as "
                    "'convert', or use --remote"
                )
            steps: list[str | dict[str, object]] = (
                ["convert", {"type": "extract", "settings": {"page_schema": INVOICE_SCHEMA}}]
                if spec == "demo"
                else [part for part in spec.split(",") if part]
            )
            created[spec] = await server.seed_pipeline(steps, name=spec)
        return created[spec]

    return pipeline


async def remote_pipeline(pipeline_id: str) -> str:
    return pipeline_id


async def main(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        if args.remote:
            if not os.environ.get("DATALAB_API_KEY"):
                print("--remote needs DATALAB_API_KEY (and DATALAB_HOST)", file=sys.stderr)
                return 2
            client = await stack.enter_async_context(AsyncDatalabClient.from_env())
            pipeline: Callable[[str], Awaitable[str]] = remote_pipeline
        else:
            server = await stack.enter_async_context(LocalDatalab(step_latency=0.1))
            client = await stack.enter_async_context(
                AsyncDatalabClient(server.api_key, server.url)
            )
            pipeline = offline_pipelines(server)
        worker = Worker(client, args, pipeline)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        where = "the API at " + client.base_url if args.remote else "an embedded local server"
        log.info(
            "worker started on %s (concurrency %d, results in %s)",
            where,
            args.concurrency,
            shown(worker.out),
        )
        await worker.run()
    log.info("worker stopped" + (f" ({worker.failed} failed)" if worker.failed else ""))
    return 1 if worker.failed and args.inbox is None else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="results and job state folder")
    parser.add_argument(
        "--remote", action="store_true", help="use the API at DATALAB_HOST with DATALAB_API_KEY"
    )
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


def log_to_stdout() -> None:
    """``2026-12-01 21:28:36.545 message``: one line per event, milliseconds after a dot."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter("%(asctime)s %(message)s")
    formatter.default_msec_format = "%s.%03d"
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.INFO, handlers=[handler])


if __name__ == "__main__":
    log_to_stdout()
    sys.exit(asyncio.run(main(parse_args())))
