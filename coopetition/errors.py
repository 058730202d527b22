"""User-facing error and warning types: the CLI turns an error into one line on stderr and exit code 2, and a
warning into one ``coopetition: warning: ...`` line."""


class CoopetitionError(Exception):
    """A mistake in what the user asked for (not a bug): reported as one line, exit code 2."""


class ConfigError(CoopetitionError):
    """A config value is out of range or inconsistent with another field."""


class DataError(CoopetitionError):
    """An input file (exemplar bank, eval sets, checkpoint, run dir) is missing or malformed."""


class CoopetitionWarning(UserWarning):
    """Something was skipped or repaired and the user should know which file (one line, never fatal)."""


class RecoveryWarning(CoopetitionWarning):
    """``--resume`` refused a damaged checkpoint or resume state and fell back to an earlier one."""


class CorruptCheckpointWarning(CoopetitionWarning):
    """A reader skipped a checkpoint whose file does not match its manifest entry."""
