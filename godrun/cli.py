"""`godrun` command: one dispatcher; each subcommand lives in the subpackage that owns it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from godrun import __version__
from godrun.errors import run_main

# subcommand -> (module with `main(argv) -> int | None`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": (
        "godrun.data.cli",
        "synthesise the corpus, build the panel and audits, check leakage, import or adopt your own data",
    ),
    "train": ("godrun.trainer.cli", "train mamba_tiny_uv with the seed's recipe flags"),
    "folds": ("godrun.trainer.folds", "train the Track_H group folds (makes the fold-02 warm start)"),
    "evaluate": ("godrun.evaluator.cli", "evaluate checkpoints on the validation panel against the gates"),
    "run": ("godrun.local.cli", "run a GodRun manifest on this machine (no cluster)"),
    "demo": ("godrun.local.demo", "the whole GodRun on a synthetic corpus, in minutes"),
    "crd": ("godrun.controller.crd", "print the GodRun CustomResourceDefinition"),
    "controller": ("godrun.controller.main", "run the Kubernetes controller"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return f"usage: godrun COMMAND [ARGS...]\n\ncommands:\n{rows}\n\n`godrun COMMAND --help` for a command's options."


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"godrun {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_main(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
