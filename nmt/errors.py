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


class StorageError(NmtError):
    """A file that cannot be written: the disk is full, read-only or not ours to write."""


class BusyError(NmtError):
    """A run or study directory that another process is using (it holds the lock)."""
