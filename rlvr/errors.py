"""Errors meant for the user: one line, no traceback (the CLI exits with status 2)."""


class ConfigError(ValueError):
    """A recipe, override or input file that cannot run. The message is one line for the user."""


class PipelineError(RuntimeError):
    """A run failed for an operational reason (an actor died or hung, weights did not arrive).

    The CLI prints the message as one line and points to resuming from the last checkpoint.
    """


class ActorFailure(PipelineError):
    """A rollout worker, a learner rank or the weight-sync group died or hung: the run can go
    on after the cluster is started again (trainer.max_restarts)."""


class CheckpointWriteError(PipelineError):
    """A checkpoint could not be written (disk full, permission); the message names the path,
    the cause and the checkpoint that is kept (one line, printed alone by the CLI)."""


def one_line(exc: BaseException) -> str:
    """An exception as "Type: its first line", at most 300 characters, for a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
