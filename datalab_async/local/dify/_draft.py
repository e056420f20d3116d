"""A draft pipeline run: the nodes execute one after the other and emit Dify's events.

The pipeline is datasource -> extractor -> chunker -> knowledge base. A run can ask for more of
Dify's event types, by name, in its ``inputs["local_dify_events"]`` (a list or a comma-separated
string; ``LocalDify(run_events=...)`` sets a default for every run):

=====================  ===========================================================================
``retry``              the extractor fails once: ``node_retry``, then it succeeds
``iteration``          an iteration node over two pages: ``iteration_started/next/completed``
``loop``               a loop node of two rounds: ``loop_started/next/completed``
``agent_log``          an agent node (with ``agent_strategy``) logging two steps: ``agent_log``
``reasoning``          an LLM node thinking aloud: ``reasoning_chunk`` (the last ``is_final``)
``text``               the LLM node streams its answer: ``text_chunk``
``text_replace``       output moderation replaces the answer: ``text_replace``
``human_input_filled`` a human-input node whose form is answered at once:
                       ``human_input_required``, ``human_input_form_filled``
``human_input_timeout`` the same, left to expire: ``human_input_form_timeout``
``tts``                text-to-speech audio before the end: ``tts_message``, ``tts_message_end``
``pause``              the human-input node pauses the run: ``human_input_required``, then
                       ``workflow_paused``, and the stream ends (no ``workflow_finished``)
``all``                every one of the above except ``pause``
=====================  ===========================================================================

Payloads follow Dify's own stream entities (``task_entities.py``): nested ``data``, nulls where
Dify sends nulls, the ``*_truncated`` flags, ``extras``, ``iteration_id`` / ``loop_id``.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._sse import Emit
from ._state import CHUNK_CHARS, DATASOURCE_NODES, PROCESSING_NODES, Dataset, now_ts

if TYPE_CHECKING:
    from ._server import LocalDify

__all__ = ["EVENTS_INPUT", "RUN_FEATURES", "DraftRun", "requested_features"]

EVENTS_INPUT = "local_dify_events"
"""The run ``inputs`` key that asks ``LocalDify`` for more event types (see the module doc)."""
RUN_FEATURES = (
    "retry",
    "iteration",
    "loop",
    "agent_log",
    "reasoning",
    "text",
    "text_replace",
    "human_input_filled",
    "human_input_timeout",
    "tts",
    "pause",
)

Outcome = tuple[str, dict[str, Any], str | None]  # status, outputs, error
_FORM_TTL = 3600


def requested_features(inputs: Mapping[str, Any], defaults: Iterable[str] = ()) -> frozenset[str]:
    """The features a run asked for (``ValueError`` names an unknown one)."""
    raw = inputs.get(EVENTS_INPUT, ())
    names = raw.split(",") if isinstance(raw, str) else list(raw) if raw else []
    wanted = {str(n).strip() for n in [*defaults, *names] if str(n).strip()}
    if "all" in wanted:
        wanted |= set(RUN_FEATURES) - {"pause"}
        wanted.discard("all")
    unknown = wanted - set(RUN_FEATURES)
    if unknown:
        raise ValueError(
            f"unknown {EVENTS_INPUT}: {', '.join(sorted(unknown))} (known: all, "
            + ", ".join(RUN_FEATURES)
            + ")"
        )
    return frozenset(wanted)


class DraftRun:
    """One draft pipeline execution: emits Dify's workflow/node events through ``emit``."""

    def __init__(
        self,
        server: LocalDify,
        dataset: Dataset,
        kind: str,
        item: Mapping[str, Any],
        start_node_id: str,
        inputs: Mapping[str, Any],
        features: frozenset[str],
    ) -> None:
        self.server = server
        self.dataset = dataset
        self.kind = kind
        self.item = item
        self.start_node_id = start_node_id
        self.inputs = dict(inputs)
        self.features = features
        self.task_id = str(uuid.uuid4())
        self.run_id = str(uuid.uuid4())
        self.workflow_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"local-dify:{dataset.id}"))
        self.injected = server._take_stream_error()
        self.created = now_ts()
        self.started = time.monotonic()
        self.index = 0  # node executions so far (Dify's ``index``)
        self.top_nodes = 0  # top-level nodes finished (for the injected stream error)
        self.previous: str | None = None
        self.tokens = 0

    # -- envelopes and payloads ------------------------------------------------------------

    def envelope(self, event: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """``{event, task_id, workflow_run_id, data}``."""
        return {
            "event": event,
            "task_id": self.task_id,
            "workflow_run_id": self.run_id,
            "data": dict(data),
        }

    def _node_base(
        self, node_id: str, node_type: str, title: str, scope: Mapping[str, str | None]
    ) -> dict[str, Any]:
        self.index += 1
        return {
            "id": str(uuid.uuid4()),
            "node_id": node_id,
            "node_type": node_type,
            "title": title,
            "index": self.index,
            "predecessor_node_id": self.previous,
            "inputs": {},
            "inputs_truncated": False,
            "created_at": now_ts(),
            "iteration_id": scope.get("iteration_id"),
            "loop_id": scope.get("loop_id"),
        }

    @staticmethod
    def _finished_data(
        base: Mapping[str, Any], outcome: Outcome, started: float, tokens: int = 0
    ) -> dict[str, Any]:
        status, outputs, error = outcome
        data = {k: v for k, v in base.items() if k not in ("extras", "agent_strategy")}
        data.update(
            process_data=None,
            process_data_truncated=False,
            outputs=outputs,
            outputs_truncated=False,
            status=status,
            error=error,
            elapsed_time=time.monotonic() - started,
            execution_metadata={"total_tokens": tokens} if tokens else None,
            finished_at=now_ts(),
            files=[],
        )
        return data

    # -- one node ------------------------------------------------------------------------------

    async def node(
        self,
        emit: Emit,
        node_id: str,
        node_type: str,
        title: str,
        compute: Callable[[], Outcome],
        *,
        scope: Mapping[str, str | None] | None = None,
        retries: int = 0,
        agent_strategy: Mapping[str, Any] | None = None,
        during: Callable[[Emit, dict[str, Any]], Any] | None = None,
    ) -> Outcome:
        """Run one node: ``node_started``, ``retries`` x ``node_retry``, whatever ``during``
        emits, then ``node_finished`` with ``compute()``'s outcome."""
        base = self._node_base(node_id, node_type, title, scope or {})
        started = time.monotonic()
        await emit(
            self.envelope("node_started", {**base, "extras": {}, "agent_strategy": agent_strategy})
        )
        for attempt in range(1, retries + 1):
            await asyncio.sleep(self.server.node_latency)
            failed: Outcome = ("retry", {}, f"upstream timeout (attempt {attempt})")
            retry = self._finished_data(base, failed, started)
            await emit(self.envelope("node_retry", {**retry, "retry_index": attempt}))
        await asyncio.sleep(self.server.node_latency)
        if during is not None:
            await during(emit, base)
        outcome = compute()
        tokens = 42 if node_type in ("llm", "agent") else 0
        self.tokens += tokens
        finished = self._finished_data(base, outcome, started, tokens)
        await emit(self.envelope("node_finished", finished))
        if not scope:
            self.previous = node_id
            if self.server.emit_unknown_events:
                # A legacy event (older Dify servers) that clients must tolerate.
                legacy = {"parallel_id": None, "parallel_branch_id": node_id}
                await emit(self.envelope("parallel_branch_started", legacy))
        return outcome

    # -- the run ---------------------------------------------------------------------------

    async def execute(self, emit: Emit) -> dict[str, Any]:
        """Run the pipeline, emitting its events; return the final workflow data (``status``
        ``succeeded``, ``failed`` or ``paused``)."""
        await emit(
            self.envelope(
                "workflow_started",
                {
                    "id": self.run_id,
                    "workflow_id": self.workflow_id,
                    "inputs": self.inputs,
                    "created_at": self.created,
                    "reason": "initial",
                },
            )
        )
        outputs: dict[str, Any] = {}
        for step in self._plan():
            if self.injected is not None and self.top_nodes == self.injected.after_nodes:
                return await self._fail_injected(emit)
            result = await step(emit)
            self.top_nodes += 1
            if isinstance(result, dict):  # the run paused
                return result
            status, node_outputs, error = result
            if status != "succeeded":
                return await self._finish(emit, "failed", {}, error)
            outputs = node_outputs or outputs
        await self._tts(emit)
        return await self._finish(emit, "succeeded", outputs, None)

    def _plan(self) -> list[Callable[[Emit], Any]]:
        """The top-level nodes of this run, in order."""
        from . import _nodes as n

        want = self.features.__contains__
        plan: list[Callable[[Emit], Any]] = [lambda e: n.datasource_node(self, e)]
        plan.append(lambda e: n.processing_node(self, e, 0, retries=1 if want("retry") else 0))
        if want("iteration"):
            plan.append(lambda e: n.iteration_node(self, e))
        plan.append(lambda e: n.processing_node(self, e, 1))
        if want("loop"):
            plan.append(lambda e: n.loop_node(self, e))
        if want("agent_log"):
            plan.append(lambda e: n.agent_node(self, e))
        if want("reasoning") or want("text") or want("text_replace"):
            plan.append(lambda e: n.llm_node(self, e))
        for mode in ("human_input_filled", "human_input_timeout", "pause"):
            if want(mode):
                plan.append(functools.partial(n.human_input_node, self, mode=mode))
        plan.append(lambda e: n.processing_node(self, e, 2))
        return plan

    async def _fail_injected(self, emit: Emit) -> dict[str, Any]:
        assert self.injected is not None
        await emit(
            {
                "event": "error",
                "task_id": self.task_id,
                "workflow_run_id": self.run_id,
                "code": self.injected.code,
                "status": self.injected.status,
                "message": self.injected.message,
            }
        )
        return {
            "status": "failed",
            "error": self.injected.message,
            "outputs": {},
            "elapsed_time": time.monotonic() - self.started,
            "total_steps": self.index,
            "created_at": self.created,
        }

    async def _tts(self, emit: Emit) -> None:
        if "tts" not in self.features:
            return
        for audio in ("SUQzBAAAAAAA", "//uQxAAAAAAA"):  # base64 MP3 bytes
            await emit({"event": "tts_message", "task_id": self.task_id, "audio": audio})
        await emit({"event": "tts_message_end", "task_id": self.task_id, "audio": ""})

    async def _finish(
        self, emit: Emit, status: str, outputs: dict[str, Any], error: str | None
    ) -> dict[str, Any]:
        finished: dict[str, Any] = {
            "id": self.run_id,
            "workflow_id": self.workflow_id,
            "status": status,
            "outputs": outputs,
            "error": error,
            "elapsed_time": time.monotonic() - self.started,
            "total_tokens": self.tokens,
            "total_steps": self.index,
            "created_by": {"id": self.server.account_id, "name": "Local", "email": None},
            "created_at": self.created,
            "finished_at": now_ts(),
            "exceptions_count": 0,
            "files": [],
        }
        await emit(self.envelope("workflow_finished", finished))
        return finished

    async def blocking(self) -> dict[str, Any]:
        """Run to the end and answer like Dify's blocking mode."""

        async def discard(_: Mapping[str, Any]) -> None:
            return None

        data = await self.execute(discard)
        data.setdefault("id", self.run_id)
        data.setdefault("workflow_id", self.workflow_id)
        data.setdefault("total_tokens", self.tokens)
        data.setdefault("finished_at", now_ts())
        return {"task_id": self.task_id, "workflow_run_id": self.run_id, "data": data}

    # -- what the nodes work on ------------------------------------------------------------

    def document_text(self) -> tuple[str, int, str | None]:
        """The item's text, its size and (for files that cannot be indexed) the error."""
        from ._published import describe_item

        name, size, fail = describe_item(self.server, self.kind, self.item)
        if self.kind == "local_file":
            file = self.server._file_for(self.item)
            assert file is not None
            return file.content.decode("utf-8", "replace"), size, fail
        return f"Content of {name}. " * (size // 20), size, fail

    def role_outcome(self, role: str) -> Outcome:
        """The outcome of a pipeline node of ``role``."""
        name, size, fail = self.server_describe()
        text, _, _ = self.document_text()
        chunks = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
        if role == "datasource":
            return "succeeded", {"file": {"name": name, "size": size, **self.item}}, None
        if role == "extractor":
            if fail is not None:
                return "failed", {}, fail
            return "succeeded", {"text": text[:200], "length": len(text)}, None
        if role == "chunker":
            return (
                "succeeded",
                {"result": {"general_chunks": chunks[:3], "count": len(chunks)}},
                None,
            )
        outputs = {"dataset_id": self.dataset.id, "document_name": name, "chunk_count": len(chunks)}
        return "succeeded", outputs, None

    def server_describe(self) -> tuple[str, int, str | None]:
        """``describe_item`` for this run's item."""
        from ._published import describe_item

        return describe_item(self.server, self.kind, self.item)

    def datasource_title(self) -> str:
        """The title of the run's datasource node."""
        return DATASOURCE_NODES[self.kind][2]

    @staticmethod
    def processing_node_spec(position: int) -> tuple[str, str, str]:
        """``(role, node_type, title)`` of the ``position``-th processing node."""
        return PROCESSING_NODES[position]

    def form_expiry(self) -> int:
        """When a human-input form of this run expires (Unix seconds)."""
        return self.created + _FORM_TTL
