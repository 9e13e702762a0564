"""``python -m examples.leukemia [COMMAND] ...``: one entry point for the example's scripts.

Commands: ``train`` (the default: with no argument at all it is the SYNTHETIC main job),
``pack``, ``compare``, ``aggregate``, ``evaluate``, ``predict``, ``explain``; the rest of the command line goes
to that script (``python -m examples.leukemia train --help``).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("train", "pack", "compare", "aggregate", "evaluate", "predict", "explain")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    if argv and not argv[0].startswith("-") and command == "train" and argv[0] not in COMMANDS:
        print(
            f"error: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)} "
            "(python -m examples.leukemia --help lists them)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"examples.leukemia.{command}")
    # predict's rows are written to its CSV; kept for a caller of main(), they would fill memory on a big folder
    result = module.main(argv, keep_rows=False) if command == "predict" else module.main(argv)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
