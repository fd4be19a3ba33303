"""``s3prl-redundancy``: one subcommand per module of ``s3prl_redundancy/commands/``.

Each command module keeps heavy imports inside its functions, has a one-line docstring (its help), and exposes
``add_arguments(parser)`` and ``run(args) -> int``, and optionally ``FLAGS`` (``{python argument: flag}`` where
the flag is not ``--name-with-dashes``). Bad input (:class:`~s3prl_redundancy.errors.UserInputError`) prints
one message in flag names and exits with status 2. An interrupt (Ctrl-C, SIGINT) prints one line and exits
with status 130; a command that can continue an interrupted run has ``resume_hint(args, argv) -> str``, which
says what was saved and the command that continues (built with :func:`command_line`).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import shlex
import sys
from typing import Dict, List, Optional, Sequence

from .errors import UserInputError

def discover_commands() -> Dict[str, str]:
    """``{command name: module name}`` for every module in ``s3prl_redundancy/commands`` (``run_downstream``
    is the command ``run-downstream``; a trailing underscore, for a Python keyword, is dropped: ``import_``
    is ``import``). Listing does not import them."""
    from . import commands

    return {
        info.name.rstrip("_").replace("_", "-"): f"{commands.__name__}.{info.name}"
        for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    }


def _summary(module_name: str) -> str:
    doc = importlib.import_module(module_name).__doc__ or ""
    return doc.strip().splitlines()[0].split(":", 1)[-1].strip() if doc.strip() else ""


class _CommandParser(argparse.ArgumentParser):
    """A command's parser whose errors are one line, like every other bad input (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _top_parser(commands: Dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3prl-redundancy",
        description="Measure layer redundancy in s3prl upstreams and compress them into s3prl hub entries.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<16} {_summary(mod)}" for name, mod in commands.items()),
    )
    parser.add_argument("command", choices=list(commands), metavar="COMMAND")
    return parser


def command_line(name: str, argv: Sequence[str], add: Sequence[str] = (), drop: Sequence[str] = ()) -> str:
    """The shell command ``s3prl-redundancy NAME ARGV`` with the switches ``add`` appended (if absent) and the
    switches ``drop`` removed: the command that resumes an interrupted run."""
    args = [a for a in argv if a not in drop]
    args += [a for a in add if a not in args]
    return shlex.join(["s3prl-redundancy", name, *args])


def _interrupted(name: str, module, args, argv: Sequence[str]) -> str:
    """The one line printed on Ctrl-C: what was saved and how to continue (the command module's hint)."""
    hint = getattr(module, "resume_hint", None)
    try:
        text = hint(args, list(argv)) if hint is not None else ""
    except Exception as e:  # the hint must never hide the interrupt behind a traceback
        text = f"(no resume hint: {type(e).__name__}: {e})"
    return f"s3prl-redundancy {name}: interrupted" + (f"; {text}" if text else "")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = discover_commands()
    if not argv or argv[0] not in commands:
        _top_parser(commands).parse_args(argv[:1] or ["--help"])  # prints help / the list of commands and exits
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(commands[name])
    help_ = _summary(commands[name])
    if getattr(module, "PASS_THROUGH", False):  # arguments belong to another program (s3prl's run_downstream)
        return module.run(rest)
    parser = _CommandParser(prog=f"s3prl-redundancy {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except UserInputError as e:  # the library names Python arguments; FLAGS maps them to this command's flags
        print(f"s3prl-redundancy {name}: error: {e.render(getattr(module, 'FLAGS', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(name, module, args, rest), file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
