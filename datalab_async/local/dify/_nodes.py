"""The nodes of a ``LocalDify`` draft run, each emitting the events Dify emits for its kind."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._sse import Emit
from ._state import now_ts

if TYPE_CHECKING:
    from ._draft import DraftRun, Outcome

__all__ = [
    "agent_node",
    "datasource_node",
    "human_input_node",
    "iteration_node",
    "llm_node",
    "loop_node",
    "processing_node",
]


async def datasource_node(run: DraftRun, emit: Emit) -> Outcome:
    """The datasource node the run starts at."""
    return await run.node(
        emit,
        run.start_node_id,
        "datasource",
        run.datasource_title(),
        lambda: run.role_outcome("datasource"),
    )


async def processing_node(run: DraftRun, emit: Emit, position: int, *, retries: int = 0) -> Outcome:
    """Extractor (0), chunker (1) or knowledge base (2); ``retries`` failed attempts first."""
    role, node_type, title = run.processing_node_spec(position)
    return await run.node(
        emit, f"{role}-node", node_type, title, lambda: run.role_outcome(role), retries=retries
    )


def _returns(outcome: Outcome) -> Callable[[], Outcome]:
    return lambda: outcome


def _container_started(run: DraftRun, node_id: str, node_type: str, title: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "node_id": node_id,
        "node_type": node_type,
        "title": title,
        "created_at": now_ts(),
        "extras": {},
        "metadata": {"iterator_length": 2} if node_type == "iteration" else {"loop_length": 2},
        "inputs": {"items": ["page 1", "page 2"]} if node_type == "iteration" else {},
        "inputs_truncated": False,
    }


async def _container(
    run: DraftRun, emit: Emit, kind: str, title: str, inner: tuple[str, str]
) -> Outcome:
    """An iteration or loop node (``kind``) of two rounds, each running the ``inner`` node
    ``(node_type, title)``: ``<kind>_started``, ``<kind>_next`` x2, ``<kind>_completed``."""
    node_id = f"{kind}-node"
    started = time.monotonic()
    start = _container_started(run, node_id, kind, title)
    await emit(run.envelope(f"{kind}_started", start))
    outputs: list[str] = []
    for round_index in range(2):
        nxt = {k: start[k] for k in ("id", "node_id", "node_type", "title")}
        nxt.update(index=round_index, created_at=now_ts(), extras={})
        await emit(run.envelope(f"{kind}_next", nxt))
        text = f"{inner[1]} round {round_index + 1}"
        done: Outcome = ("succeeded", {"output": text}, None)
        scope = {f"{kind}_id": node_id}
        await run.node(emit, f"{kind}-inner-node", *inner, _returns(done), scope=scope)
        outputs.append(text)
    completed = {k: v for k, v in start.items() if k != "metadata"}
    completed.update(
        outputs={"output": outputs},
        outputs_truncated=False,
        status="succeeded",
        error=None,
        elapsed_time=time.monotonic() - started,
        total_tokens=0,
        execution_metadata={"total_tokens": 0},
        finished_at=now_ts(),
        steps=2,
    )
    await emit(run.envelope(f"{kind}_completed", completed))
    run.previous = node_id
    return "succeeded", {}, None


async def iteration_node(run: DraftRun, emit: Emit) -> Outcome:
    """An iteration node over two pages (a code node inside)."""
    return await _container(run, emit, "iteration", "Per page", ("code", "Clean page"))


async def loop_node(run: DraftRun, emit: Emit) -> Outcome:
    """A loop node of two rounds (a template node inside)."""
    return await _container(run, emit, "loop", "Refine chunks", ("template-transform", "Refine"))


async def agent_node(run: DraftRun, emit: Emit) -> Outcome:
    """An agent node that logs two steps (the second nested in the first)."""

    async def log(emit: Emit, base: Mapping[str, Any]) -> None:
        parent: str | None = None
        for label, status in (("ROUND 1", "start"), ("Search tool", "success")):
            entry_id = str(uuid.uuid4())
            data = {
                "node_execution_id": base["id"],
                "id": entry_id,
                "label": label,
                "parent_id": parent,
                "error": None,
                "status": status,
                "data": {"output": f"{label} output"},
                "metadata": {"elapsed_time": 0.01, "provider": "local"},
                "node_id": base["node_id"],
            }
            await emit({"event": "agent_log", "task_id": run.task_id, "data": data})
            parent = entry_id

    return await run.node(
        emit,
        "agent-node",
        "agent",
        "Enrich metadata",
        lambda: ("succeeded", {"text": "keywords: local, dify"}, None),
        agent_strategy={"name": "function_calling", "icon": None},
        during=log,
    )


async def llm_node(run: DraftRun, emit: Emit) -> Outcome:
    """An LLM node: ``reasoning_chunk``, ``text_chunk`` and ``text_replace`` as requested."""
    answer = ["A short ", "summary of ", "the document."]

    async def stream(emit: Emit, base: Mapping[str, Any]) -> None:
        if "reasoning" in run.features:
            for piece, final in (
                ("Reading the text; ", False),
                ("it is short.", False),
                ("", True),
            ):
                data = {"message_id": None, "reasoning": piece, "node_id": base["node_id"]}
                await emit(run.envelope("reasoning_chunk", {**data, "is_final": final}))
        if "text" in run.features:
            for piece in answer:
                data = {"text": piece, "from_variable_selector": [base["node_id"], "text"]}
                await emit(run.envelope("text_chunk", data))
        if "text_replace" in run.features:
            await emit(run.envelope("text_replace", {"text": "[moderated summary]"}))

    return await run.node(
        emit,
        "llm-node",
        "llm",
        "Summarise",
        lambda: ("succeeded", {"text": "".join(answer)}, None),
        during=stream,
    )


def _form(run: DraftRun, base: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "form_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"form:{run.run_id}")),
        "node_id": base["node_id"],
        "node_title": base["title"],
        "form_content": "Approve indexing of {{#sys.document#}}?",
        "inputs": [
            {
                "type": "paragraph",
                "output_variable_name": "comment",
                "default": {"type": "constant", "selector": [], "value": "looks fine"},
            }
        ],
        "actions": [
            {"id": "approve", "title": "Approve", "button_style": "primary"},
            {"id": "reject", "title": "Reject", "button_style": "default"},
        ],
        "display_in_ui": True,
        "form_token": f"form-{run.run_id[:8]}",
        "resolved_default_values": {"comment": "looks fine"},
        "expiration_time": run.form_expiry(),
    }


async def human_input_node(run: DraftRun, emit: Emit, *, mode: str) -> Outcome | dict[str, Any]:
    """A human-input node: its form is answered (``human_input_filled``), expires
    (``human_input_timeout``) or pauses the run (``pause``: returns the paused workflow data)."""
    late = mode == "human_input_timeout"
    node_id, title = (
        ("human-input-2-node", "Late review") if late else ("human-input-node", "Review")
    )
    base = run._node_base(node_id, "human-input", title, {})
    started = time.monotonic()
    await emit(run.envelope("node_started", {**base, "extras": {}, "agent_strategy": None}))
    await asyncio.sleep(run.server.node_latency)
    await emit(run.envelope("human_input_required", _form(run, base)))
    if mode == "pause":
        return await _pause(run, emit, base)
    who = {"node_id": base["node_id"], "node_title": base["title"]}
    if mode == "human_input_filled":
        filled = {"rendered_content": "Approve? looks fine", "action_id": "approve"}
        await emit(
            run.envelope("human_input_form_filled", {**who, **filled, "action_text": "Approve"})
        )
        outcome: Outcome = ("succeeded", {"__action_id": "approve", "comment": "looks fine"}, None)
    else:
        expired = {**who, "expiration_time": run.form_expiry()}
        await emit(run.envelope("human_input_form_timeout", expired))
        outcome = ("succeeded", {"__action_id": "__timeout"}, None)
    await emit(run.envelope("node_finished", run._finished_data(base, outcome, started)))
    run.previous = base["node_id"]
    return outcome


async def _pause(run: DraftRun, emit: Emit, base: Mapping[str, Any]) -> dict[str, Any]:
    paused = {
        "workflow_run_id": run.run_id,
        "paused_nodes": [base["node_id"]],
        "outputs": {},
        "reasons": [
            {
                "type": "human_input_required",
                "node_id": base["node_id"],
                "form_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"form:{run.run_id}")),
                "form_token": f"form-{run.run_id[:8]}",
                "expiration_time": run.form_expiry(),
            }
        ],
        "status": "paused",
        "created_at": run.created,
        "elapsed_time": time.monotonic() - run.started,
        "total_tokens": run.tokens,
        "total_steps": run.index,
    }
    await emit(run.envelope("workflow_paused", paused))
    return {"id": run.run_id, "workflow_id": run.workflow_id, **paused}
