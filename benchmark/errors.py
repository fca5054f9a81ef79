"""Errors a user can cause, raised with one clear paragraph.

The CLI catches :class:`UserError` and prints its message without a traceback, so every
message must name the file or key at fault and say what to do about it.
"""


class UserError(Exception):
    """Base class for problems caused by input (config, data, checkpoints), not by bugs."""


class ConfigError(UserError):
    """A config key, value or file is wrong."""


class DataError(UserError):
    """A dataset file is missing, corrupt, or inconsistent with the config."""


class CheckpointError(UserError):
    """A checkpoint does not match the architecture or run it is loaded into."""
