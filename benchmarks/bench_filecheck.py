"""The cost of the magic-bytes check per file, side by side with what a folder job already pays.

For each file size, on the same files in the same run (page cache warm, best of --repeat):

- ``stat + extension``: what ``check_file`` did before the content check (the baseline);
- ``check_file``: the same plus one read of the first 4 KiB and the signature check;
- ``sha256 of the file``: the fingerprint ``process_folder`` takes of every document anyway.

python benchmarks/bench_filecheck.py            # 2,000 files per size
python benchmarks/bench_filecheck.py --quick    # 300
"""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from datalab_async._folder_manifest import fingerprint_file
from datalab_async._protocol.validation import check_extension, check_file
from datalab_async.local.samples import make_pdf

SIZES = {"1.5 KB": 0, "1 MB": 1024 * 1024, "20 MB": 20 * 1024 * 1024}


def _baseline(path: Path) -> None:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        raise AssertionError(path)
    check_extension(path.name, allow_any_file_type=False)


def _best(paths: list[Path], work: Callable[[Path], object], repeat: int) -> float:
    for path in paths:  # warm-up: page cache, first-call costs
        work(path)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for path in paths:
            work(path)
        best = min(best, time.perf_counter() - started)
    return best / len(paths) * 1e6  # microseconds per file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 files per size")
    parser.add_argument("--files", type=int, default=None, help="files per size (default 2000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    count = args.files or (300 if args.quick else 2000)
    print(f"{count} PDF files per size, best of {args.repeat}, microseconds per file\n")
    print(
        "| file size | stat + extension (before) | check_file (with the check) | added |"
        " sha256 of the file |"
    )
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, padding in SIZES.items():
            folder = Path(tmp) / label.replace(" ", "")
            folder.mkdir()
            pdf = make_pdf(["Invoice 1"]) + b"%" * padding
            # Big sizes: fewer files, so that the run stays short and within the page cache.
            n = (
                count
                if padding < 1024 * 1024
                else max(20, count // (100 if padding > 2**21 else 10))
            )
            paths = []
            for i in range(n):
                path = folder / f"doc-{i:05d}.pdf"
                path.write_bytes(pdf)
                paths.append(path)
            before = _best(paths, _baseline, args.repeat)
            after = _best(paths, check_file, args.repeat)
            digest = _best(paths, fingerprint_file, max(1, args.repeat // 2))
            print(
                f"| {label} ({n} files) | {before:.1f} | {after:.1f} | {after - before:+.1f} |"
                f" {digest:.1f} |"
            )
            for path in paths:
                os.unlink(path)


if __name__ == "__main__":
    main()
