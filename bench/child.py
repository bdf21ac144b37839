"""Child-process entry point: ``python -m bench.child TASK PARAMS_JSON``.

Runs one task from :data:`bench.workloads.TASKS` and prints its result dict as
one JSON line prefixed with :data:`RESULT_PREFIX` (other output, e.g. logging
from the engine, is ignored by the parent). Errors are reported the same way
with an ``error`` key and exit status 1.
"""

from __future__ import annotations

import json
import sys
import traceback

RESULT_PREFIX = "@@BENCH_RESULT@@ "


def main(argv: list[str]) -> int:
    """Run the task named in ``argv[0]`` with JSON params ``argv[1]``."""
    task_name, params = argv[0], json.loads(argv[1])
    try:
        from bench.workloads import TASKS

        result = TASKS[task_name](params)
        status = 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent verbatim
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
        status = 1
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
