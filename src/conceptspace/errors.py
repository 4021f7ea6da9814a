"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class ConceptspaceError(Exception):
    """A user-facing error: bad config, bad input file, a run directory in the wrong state."""


class ConfigError(ConceptspaceError, ValueError):
    """A config file or override that fails validation; the message names file, key and reason."""
