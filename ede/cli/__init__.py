"""The `ede` command line: parse (`ede.cli.parser`), run (`ede.cli.commands`).

Every failure the user can fix is one line on stderr, `ede <command>: error: ...`,
and exit code 2: bad input, a missing file, and storage that cannot be reached
(`ede.storage.storage_error`: bucket missing, access denied, no credentials,
endpoint unreachable). Nothing else is caught, so a bug still shows its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ede.cli.commands import COMMANDS
from ede.cli.parser import build_parser
from ede.conditional_write import Conflict
from ede.storage import storage_error

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

EXIT_BAD_INPUT = 2
# Conflict: a compare-and-swap that kept losing to other writers (ede.conditional_write)
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, ConnectionError, Conflict)


def _set_threads(n: int, torch_too: bool = True) -> None:
    """Before any work: the pools size themselves on first use."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    if torch_too:  # `ede score` runs onnxruntime only, `ede train-run` Ray tasks: no torch here
        import torch

        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - shipped with scikit-learn
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _set_threads(args.threads, torch_too=args.command not in ("score", "report", "train-run"))
    try:
        COMMANDS[args.command](args)
    except Exception as exc:
        line = _user_error(exc)
        if line is None:
            raise
        print(f"ede {args.command}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _user_error(exc: Exception) -> str | None:
    """The line to print, or None for a bug. A storage failure that escaped ede.storage
    (a library reading the URL itself) is one line too, naming what the backend says."""
    failed = storage_error(exc, None, "use storage")
    if failed is not None:
        return str(failed)
    return str(exc) if isinstance(exc, USER_ERRORS) else None


if __name__ == "__main__":
    sys.exit(main())
