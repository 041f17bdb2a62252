"""How every command ends on a user's mistake: one line on stderr, exit status 2, no traceback.

``FACEREC_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from hydra.errors import HydraException


class UsageError(Exception):
    """A mistake of the user's (config, data, checkpoint) with a message that says what to fix."""


def one_line(message: str) -> str:
    """Hydra's multi-line messages (a list of options, the search path) on one line."""
    lines = [line.strip() for line in message.split("Config search path:")[0].splitlines()]
    return " ".join(line for line in lines if line)


def composition_message(error: HydraException) -> str:
    """One line: a missing choice lists the group's options (a launcher names its extra)."""
    options = getattr(error, "options", None)
    missing = getattr(error, "missing_cfg_file", None) or ""
    if options is not None:
        head = one_line(str(error)).split(" Available options", 1)[0]
        hint = ""
        if missing.startswith("hydra/launcher/") and "joblib" not in options:
            hint = " (the joblib launcher comes with the study extra: pip install 'facerec[study]')"
        group = missing.rsplit("/", 1)[0]
        return f"{head}. Available options in '{group}': {', '.join(options)}{hint}"
    return one_line(str(error))


def user_message(error: BaseException) -> str:
    """The error's message; from a DataLoader worker, just the original last line."""
    message = str(error)
    if "Original Traceback" in message:  # torch re-raises worker errors with their traceback
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return message


def report(error: BaseException, prog: str = "facerec") -> int:
    """Print ``<prog>: error: <message>`` (one line, no traceback) and return exit status 2.

    ``FACEREC_DEBUG=1`` re-raises instead, to see the traceback.
    """
    if os.environ.get("FACEREC_DEBUG"):
        raise error
    print(f"{prog}: error: {user_message(error)}", file=sys.stderr)
    return 2


def fail(error: BaseException) -> NoReturn:
    """``train.py``'s exit on a user's mistake: one line, status 2."""
    sys.exit(report(error))


def run_tool(main: Callable[[], int | None], prog: str) -> int:
    """Run a script's body; a user's mistake ends with one line on stderr, not a traceback.

    Missing files, malformed inputs and non-checkpoints (``OSError``, ``ValueError``) print
    ``<prog>: error: <message>`` and return 2.

    Returns:
        The exit status: ``main``'s return value (None: 0), 2 on a user error.
    """
    try:
        return int(main() or 0)
    except (OSError, ValueError) as error:
        return report(error, prog)
