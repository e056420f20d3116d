"""What an import loads, checked in fresh interpreters: ``import datalab_async`` and the pytest
plugin load none of the package's dependencies, the client does not load the models of APIs
it has not called yet. (The import times themselves are measured by
``benchmarks/bench_import.py``.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

DEPENDENCIES = ("aiohttp", "attrs", "cattrs", "anyio")


def loaded_after(code: str) -> set[str]:
    """The modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    program = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code", ["import datalab_async", "import datalab_async.local.pytest_plugin"]
)
def test_importing_the_package_or_its_plugin_loads_no_dependency(code: str) -> None:
    loaded = loaded_after(code)
    assert [name for name in DEPENDENCIES if name in loaded] == []
    ours = {name for name in loaded if name.startswith("datalab_async")}
    assert ours <= {
        "datalab_async",
        "datalab_async._lazy",  # two dozen lines, stdlib only
        "datalab_async._version",
        "datalab_async.local",
        "datalab_async.local.pytest_plugin",
    }


def test_a_public_name_loads_on_first_use() -> None:
    loaded = loaded_after(
        "import datalab_async\n"
        "assert 'AsyncDatalabClient' in dir(datalab_async)\n"
        "datalab_async.RateLimitError"
    )
    assert "datalab_async._errors" in loaded
    assert "datalab_async._client" not in loaded


def test_the_client_loads_collection_and_workflow_models_only_when_used() -> None:
    loaded = loaded_after("from datalab_async import AsyncDatalabClient")
    assert "datalab_async._models.pipelines" in loaded
    assert "datalab_async._models.collections" not in loaded
    assert "datalab_async._models.workflows" not in loaded
    loaded = loaded_after("from datalab_async import Collection, WorkflowExecution")
    assert {"datalab_async._models.collections", "datalab_async._models.workflows"} <= loaded


def test_models_loaded_after_the_first_structure_call_keep_their_hooks() -> None:
    # The fast converter copy (no detailed validation) is made on first use; a model module
    # loaded later registers hooks (aliases such as ``id`` -> ``execution_id``) that must reach
    # it too, or every such response would take the slow path (fast attempt fails, retried).
    code = """
from datalab_async._models import PipelineExecution, _base, structure
structure({"execution_id": "pex_1", "pipeline_id": "pl_1", "status": "running"}, PipelineExecution)
from datalab_async._models import WorkflowExecution
data = {"id": "7", "workflow_id": 3, "status": "COMPLETED"}
assert _base._fast_converter().structure(data, WorkflowExecution).execution_id == 7
"""
    loaded_after(code)
