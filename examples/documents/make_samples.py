"""Write the sample document set (invoice PDFs, DOCX, PPTX, PNG, HTML, Markdown) into a folder.

Usage: ``python examples/documents/make_samples.py [DIR]`` (default: this script's folder).
Idempotent: the bytes are deterministic and files that are already right are left untouched.
"""

from __future__ import annotations

import sys
from pathlib import Path

from datalab_async.local.samples import write_sample_documents

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    folder = Path(args[0]) if args else Path(__file__).resolve().parent
    for path in write_sample_documents(folder):
        print(f"{path}  ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
