"""The `ede` command line: parse (`ede.cli.parser`), run (`ede.cli.commands`).

Every failure the user can fix is one line on stderr, `ede <command>: error: ...`,
and exit code 2; nothing else is caught, so a bug still shows its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ede.cli.commands import COMMANDS
from ede.cli.parser import build_parser

__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]

EXIT_BAD_INPUT = 2


def _set_threads(n: int, torch_too: bool = True) -> None:
    """Before any work: the pools size themselves on first use."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    if torch_too:  # `ede score` runs onnxruntime only: no need to load torch for it
        import torch

        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - shipped with scikit-learn
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _set_threads(args.threads, torch_too=args.command != "score")
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"ede {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
