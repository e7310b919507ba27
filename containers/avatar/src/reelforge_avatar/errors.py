"""Error types shared by the entry points."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or settings: the job fails and a retry would fail the same way."""


class RequestError(UserError):
    """The fine-tune request object does not follow the contract."""


class TrainingError(RuntimeError):
    """Fine-tuning failed; the async endpoint reports it as a failure (never a success body)."""
