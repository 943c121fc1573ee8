"""Exit codes every stage and command follows: 0 it ran (a failed gate is a verdict), 2 bad input (the message
names the field, row or file; nothing half-written), anything else unexpected. docs/design.md, section 4."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad input from the user: the message names the field, row or file. Maps to exit 2."""


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's main(); turn InputError into one clear line on stderr and exit code 2."""
    try:
        code = main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else int(code)
