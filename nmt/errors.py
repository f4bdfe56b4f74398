"""User-facing errors: the command-line tools print their message as one line and exit non-zero."""


class NmtError(Exception):
    """A problem the user can fix (bad input, missing file); never a bug in nmt itself."""

    exit_code = 2


class ConfigError(NmtError, ValueError):
    """An invalid or unknown configuration field."""


class DataError(NmtError):
    """A corpus file that is missing, corrupt or malformed."""


class CheckpointError(NmtError):
    """A run directory that is missing or incomplete."""
