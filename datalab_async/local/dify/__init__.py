"""``LocalDify``: an in-process stand-in for Dify's knowledge-pipeline service API.

It serves the endpoints ``AsyncDifyKnowledgeClient`` uses, under ``/v1``, on 127.0.0.1::

    async with LocalDify(node_latency=0.01) as server:
        dataset_id = server.create_dataset()
        async with AsyncDifyKnowledgeClient(server.api_key, server.url) as client:
            ...

- ``POST /v1/datasets/pipeline/file-upload``: multipart, exactly one ``file`` part -> 201.
- ``GET  /v1/datasets/{id}/pipeline/datasource-plugins``: the dataset's datasource nodes.
- ``POST /v1/datasets/{id}/pipeline/run``: draft runs execute the pipeline's nodes (each takes
  ``node_latency`` seconds) and answer blocking JSON or a ``text/event-stream`` of Dify's events
  with ``event: ping`` keep-alives every ``ping_interval`` seconds; a run's
  ``inputs["local_dify_events"]`` (or the ``run_events`` knob) adds iteration and loop nodes, a
  node retry, an agent log, reasoning and text chunks, human input, TTS audio or a pause (see
  ``_draft``). Published runs answer ``{batch, dataset, documents}`` JSON whatever
  ``response_mode`` says.
- ``POST /v1/datasets/{id}/pipeline/datasource/nodes/{node_id}/run``: a datasource node run's
  ``datasource_processing`` / ``datasource_completed`` / ``datasource_error`` events.
- ``GET  /v1/datasets/{id}/documents/{batch}/indexing-status``: each document moves through
  waiting -> parsing -> cleaning -> splitting -> indexing -> completed, one step every
  ``indexing_step_delay`` seconds; files that cannot be indexed (images) end in ``error``;
  ``pause_indexing()`` makes the next documents stop ``paused``.
- ``GET  /v1/datasets/{id}/documents?page=&limit=&keyword=``: every document of the dataset,
  newest first, with its current indexing status (``list_source_info=False`` leaves out each
  document's ``data_source_info``, as older Dify versions' listings do).

Every request needs ``Authorization: Bearer <api_key>`` (else 401 with Dify's error envelope).
Knobs for tests: ``fail_next`` (HTTP error responses), ``inject_stream_error`` (an SSE ``error``
event mid-stream), ``emit_unknown_events`` (a legacy event the client does not model after each
node), ``pause_indexing``, ``lose_run_answers`` (a published run creates its documents and
answers a 5xx), latency knobs (``upload_latency``, ``run_latency``, ``list_latency``, plus
``node_latency`` and ``indexing_step_delay``), ``batch_upload_limit`` (refuse bigger published
runs, as Dify's ``BATCH_UPLOAD_LIMIT``), ``documents()`` (the server's own records) and
``stats`` (``open_streams`` tells whether an abandoned stream was closed).
"""

from ._draft import EVENTS_INPUT, RUN_FEATURES
from ._server import LocalDify
from ._state import LocalDifyStats, RecordedRequest

__all__ = ["EVENTS_INPUT", "RUN_FEATURES", "LocalDify", "LocalDifyStats", "RecordedRequest"]
