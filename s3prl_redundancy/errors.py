"""The one exception type for bad user input, in the caller's language.

Library functions speak the Python API's language: a :class:`UserInputError` names the *argument* that is
wrong (``argument="out_dir"``) and writes other arguments it mentions between backticks, as Python names
(`` `force=True` ``, `` `resume` ``). ``str(error)`` is the Python rendering::

    out_dir: /tmp/x holds results of a previous `prune` run; pass `force=True` to replace them

The command line renders the same error with its flag names (:meth:`UserInputError.render`, called by
``cli.main`` with the command's ``FLAGS``)::

    --out: /tmp/x holds results of a previous `prune` run; pass --force to replace them
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

# `name` or `name=value` between backticks, where name is a Python identifier
_ARG_TOKEN = re.compile(r"`([a-z_][a-z0-9_]*)(?:=([^`]*))?`")


class UserInputError(ValueError):
    """Input that the user can fix (a path, a layer list, a config). The message names the problem and the fix.

    ``argument`` is the Python name of the argument at fault (None when no single argument is). Other
    arguments named in the message are written between backticks: `` `force=True` ``, `` `ckpt` ``.
    """

    def __init__(self, message: str, *, argument: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.argument = argument

    def __str__(self) -> str:
        return f"{self.argument}: {self.message}" if self.argument else self.message

    def render(self, flags: Optional[Mapping[str, str]] = None) -> str:
        """The message with every argument written as its command-line flag.

        ``flags`` maps Python argument names to flags where they differ from ``--name-with-dashes``
        (``{"out_dir": "--out"}``); a name mapped to ``""`` is written as its bare value (a positional).
        """
        return render_arguments(str(self) if not self.argument else f"`{self.argument}`: {self.message}", flags)


def flag_for(name: str, flags: Optional[Mapping[str, str]] = None) -> str:
    """The command-line flag of the Python argument ``name``."""
    if flags and name in flags:
        return flags[name]
    return "--" + name.replace("_", "-")


def render_arguments(text: str, flags: Optional[Mapping[str, str]] = None) -> str:
    """Replace `` `name` `` / `` `name=value` `` tokens in ``text`` by flags: ``--name`` / ``--name value``.

    Booleans read as switches: `` `force=True` `` becomes ``--force`` and `` `resume=False` `` becomes
    ``without --resume`` (write "run it `resume=False`" so that both renderings read well).
    """

    def replace(match: "re.Match[str]") -> str:
        name, value = match.group(1), match.group(2)
        flag = flag_for(name, flags)
        if value is None or value == "True":
            return flag or name
        if value == "False":
            return f"without {flag}"
        return f"{flag} {value}".strip() if flag else value

    return _ARG_TOKEN.sub(replace, text)
