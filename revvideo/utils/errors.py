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


class RunStopped(Exception):
    """A run that cannot go on for a cause outside its inputs, such as a data loader worker
    killed by the system; the message is one line, and the checkpoints written are kept."""


def first_line(err: BaseException) -> str:
    """An exception's message in one line, for libraries' many-line errors; its type's name
    when it has none."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
