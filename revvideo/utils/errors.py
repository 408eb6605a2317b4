"""Exceptions for user mistakes: the command-line tools print them as one line, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, file, checkpoint) that has a one-line explanation."""


class ConfigError(UserError):
    """An unknown key, a value of the wrong type, or an inconsistent setting in a config."""


class CheckpointError(UserError):
    """A file that is not a checkpoint, one that does not fit the model, or a checkpoint that
    cannot be written."""


class DataError(UserError):
    """A dataset that cannot be read: a missing list file, a malformed line, a label out of range."""
