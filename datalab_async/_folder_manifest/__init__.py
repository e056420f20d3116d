"""Pure logic behind ``process_folder``, one module per concern: ``_walk`` (walking the input),
``_journal`` (the manifest and per-document states, fingerprints), ``_output`` (safe output
paths and result files), ``_summary`` (what a job reports), ``_text`` (error text).

Nothing here talks to the network. The manifest is a JSON-lines journal in the output folder;
each line is one event (``submitted``, ``completed``, ``failed``) appended and flushed as it
happens, so a crash or Ctrl-C leaves a readable file (a torn last line is ignored on read).
Replaying it tells a re-run which documents are done, which were submitted but never finished
(resume by execution id, no second submission) and which failed (submitted again).

Output paths are built only from sanitised components and verified, after resolving symlinks,
to stay inside the output folder: names from the server or from crafted files (``..``, absolute
paths, NUL bytes, separators) can never write elsewhere.
"""

from ._journal import (
    MANIFEST_NAME,
    STATE_NAME,
    DocState,
    FileFingerprint,
    Manifest,
    config_fingerprint,
    fingerprint_file,
    read_manifest,
    read_marker,
    replay_manifest,
    write_marker,
)
from ._output import (
    UnsafePathError,
    copy_results,
    count_pages,
    document_dir,
    document_key,
    inside,
    result_files,
    result_payloads,
    safe_join,
    sanitize_component,
    write_file_inside,
    write_results,
)
from ._summary import (
    FolderOutcome,
    FolderSummary,
    IgnoredFile,
)
from ._text import (
    describe_error,
    execution_failure,
    json_line,
    printable,
)
from ._walk import (
    FolderEntry,
    ignored_list_path,
    read_ignored,
    unique_entries,
    walk_folder,
    write_ignored,
)

__all__ = [
    "MANIFEST_NAME",
    "STATE_NAME",
    "DocState",
    "FileFingerprint",
    "FolderEntry",
    "FolderOutcome",
    "FolderSummary",
    "IgnoredFile",
    "Manifest",
    "UnsafePathError",
    "config_fingerprint",
    "copy_results",
    "describe_error",
    "execution_failure",
    "count_pages",
    "document_dir",
    "document_key",
    "fingerprint_file",
    "inside",
    "ignored_list_path",
    "read_ignored",
    "json_line",
    "printable",
    "read_manifest",
    "read_marker",
    "replay_manifest",
    "result_files",
    "result_payloads",
    "safe_join",
    "sanitize_component",
    "unique_entries",
    "walk_folder",
    "write_ignored",
    "write_results",
    "write_file_inside",
    "write_marker",
]
