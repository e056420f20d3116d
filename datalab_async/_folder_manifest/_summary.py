"""What a folder job reports: the summary, the failures, the files left out."""

from __future__ import annotations

from pathlib import Path

import attrs

# -- results ---------------------------------------------------------------------------------


@attrs.frozen
class FolderOutcome:
    """How one document of a folder job failed: the bulk calls' one failure shape.

    ``error`` is the exception that stopped the document (None when its execution ran and
    ended failed: ``reason`` then names the failed steps); ``execution_id`` is set once the run
    was accepted (a re-run resumes an interrupted one instead of submitting it again).
    Shares ``name``, ``ok``, ``error``, ``execution_id`` and ``describe_failure()`` with
    ``DocumentOutcome``.
    """

    relative: str
    reason: str
    execution_id: str | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)

    @property
    def name(self) -> str:
        """The document's path relative to the input (its label in logs and summaries)."""
        return self.relative

    @property
    def ok(self) -> bool:
        """Always False: only failures are kept as outcomes."""
        return False

    def describe_failure(self) -> str:
        """A one-line reason this document failed."""
        return self.reason


@attrs.frozen
class IgnoredFile:
    """A file or folder the walk left out, and why: ``reason`` is e.g. ``"unsupported type
    .txt"``, ``"symlink leads outside the folder"`` or ``"unreadable folder"``."""

    relative: str
    reason: str

    def __str__(self) -> str:
        return f"{self.relative} ({self.reason})"


@attrs.frozen
class FolderSummary:
    """What ``process_folder`` did.

    ``done``: relative paths processed successfully in this run (``resumed`` is the subset that
    an earlier, interrupted run had already submitted); ``failed``: a ``FolderOutcome`` per
    document that failed (``.relative``, ``.reason``, ``.error``, ``.execution_id``);
    ``skipped``: done by an earlier run (per the manifest); ``ignored``: an
    :class:`IgnoredFile` (``.relative``, ``.reason``) per file or folder the walk left out
    (unsupported type, symlinks leading out of the folder, unreadable folders). ``pages``
    counts pages processed in this run when the results report them. ``copied``:
    ``(document, original)`` pairs of documents with the same content as another, given copies
    of its results instead of being submitted (they are in ``done`` too). ``interrupted``: the
    job was stopped (``JobControl``) before it went through every document; ``pending`` names
    those it had started and left for a re-run to resume (documents never reached are not
    listed). ``out_dir`` is a ``Path``, or the URL of an object-store output (which has no
    manifest: ``manifest_path`` is then None, the state objects hold the same).
    """

    done: tuple[str, ...]
    failed: tuple[FolderOutcome, ...]
    skipped: tuple[str, ...]
    pages: int
    elapsed: float
    out_dir: Path | str
    manifest_path: Path | None
    resumed: tuple[str, ...] = ()
    ignored: tuple[IgnoredFile, ...] = ()
    copied: tuple[tuple[str, str], ...] = ()
    interrupted: bool = False
    pending: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no document failed and the job was not interrupted."""
        return not self.failed and not self.interrupted

    @property
    def total(self) -> int:
        """Documents considered: done + failed + skipped."""
        return len(self.done) + len(self.failed) + len(self.skipped)

    def __str__(self) -> str:
        ignored = f", {len(self.ignored)} ignored" if self.ignored else ""
        text = (
            f"{len(self.done)} done, {len(self.failed)} failed, {len(self.skipped)} skipped"
            f"{ignored}, {self.pages} pages in {self.elapsed:.1f}s"
        )
        if self.copied:
            text += f" ({len(self.copied)} identical to another document, paid once)"
        if self.interrupted:
            text += f"; interrupted ({len(self.pending)} left to resume)"
        return text
