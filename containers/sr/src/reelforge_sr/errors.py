"""Exceptions with messages meant for people: the CLI prints them and writes them to ``failure``."""


class ReelForgeError(RuntimeError):
    """Base class: a clear, expected failure (bad input, missing weights, encoder error...).

    ``permanent`` says that running the same step again cannot help (the input itself is unusable);
    the CLI then tells Slurm's caller so, and the task fails once, without retries.
    """

    permanent = False


class ProbeError(ReelForgeError):
    """The source is not a usable video (empty, corrupt, no video stream, absurd size...)."""

    permanent = True


class PlanError(ReelForgeError):
    """The plan cannot be made or read (bad settings, unreadable plan.json...)."""


class ModelError(ReelForgeError):
    """Weights are missing, do not verify, or do not fit the architecture."""


class SegmentError(ReelForgeError):
    """A segment could not be produced with exactly the planned frames."""


class AssembleError(ReelForgeError):
    """Concatenation, muxing or the final checks failed."""


class TimingError(AssembleError):
    """The output would not play each frame at its source time (deterministic: a rerun gives the same)."""

    permanent = True


class StorageError(ReelForgeError):
    """S3 fetch/deliver failed (transient: the network, S3 or the node may recover)."""


class UnusableObjectError(StorageError):
    """The key, URI or object itself cannot be used (bad key, missing, empty, too large): permanent."""

    permanent = True
