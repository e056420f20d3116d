"""The private helpers of ``process_folder`` that the Temporal activities reuse, imported in this
one place (so a move of those helpers touches one file)."""

from __future__ import annotations

from .._client.folder import _describe, _execution_failure, _unique_entries, _write_results

__all__ = ["_describe", "_execution_failure", "_unique_entries", "_write_results"]
