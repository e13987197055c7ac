"""`python -m flows.run retrain data_url=... storage_url=... trials=0`: one flow run here.

What a deployment's run does, from a shell: Prefect validates the parameters against
the flow's signature (so `trials=0` arrives as an int), the run logs as it would under
a worker, and a failure ends with the flow's one summary line (`flows.console`) and
exit status 1, not with the Python traceback a bare `retrain(...)` call would print.
"""

from __future__ import annotations

import json
import sys


def flows() -> dict:
    from flows.retrain import retrain
    from flows.score import score

    return {"retrain": retrain, "score": score}


def parse(pairs: list[str]) -> dict:
    """`key=value` pairs; a value that reads as JSON (`0`, `true`, `null`, `[..]`) is
    taken as that, anything else as a string."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {pair!r}: parameters are key=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known = flows()
    if not argv or argv[0] not in known:
        print(f"usage: python -m flows.run {{{','.join(known)}}} key=value ...", file=sys.stderr)
        return 2
    state = known[argv[0]](**parse(argv[1:]), return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
