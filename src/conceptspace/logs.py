"""Log output of the package: messages go through `logging` under the "conceptspace" logger."""

from __future__ import annotations

import logging
import sys


def configure_logging(verbosity: int) -> None:
    """-q: warnings and errors only; default: progress and notes; -v: debug (and tracebacks)."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if verbosity <= 0 else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("conceptspace")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = True  # our handler prints; the root logger (no handler outside tests) adds nothing


def ensure_logging() -> None:
    """Progress and notes on stderr in a process nobody configured (a sweep worker), as the CLI would show them."""
    if not logging.getLogger("conceptspace").handlers:
        configure_logging(0)
