"""The provider's SageMaker operators, with what a retried or re-run task needs.

``SageMakerTrainingOperator`` / ``SageMakerProcessingOperator`` start a *new* job when one with the
configured name exists (a timestamp suffix). For a retry that is wrong while the first job still
runs (two jobs writing one checkpoint prefix) and wasteful when it has completed. These subclasses
look first at the newest job of the task (the configured name, or a retry's suffixed name):

* ``Completed`` → return its description (a cleared or re-run task costs nothing: idempotent);
* ``InProgress`` / ``Stopping`` → wait for *that* job (deferred, as the provider does);
* ``Failed`` / ``Stopped`` or absent → the provider's behaviour (a failed training job's successor
  gets a suffixed name but the same checkpoint URI, so it resumes from the newest snapshot).

``RegisterModelVersionOperator`` only adds ``extras`` to the template fields so that the model
package's metadata can come from upstream tasks.
"""

from __future__ import annotations

import re
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerProcessingOperator,
    SageMakerRegisterModelVersionOperator,
    SageMakerTrainingOperator,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

_RUNNING = {"InProgress", "Stopping"}


class _ReattachMixin:
    _job_type: str  # "Training" | "Processing"

    def _latest_attempt(self, name: str) -> dict[str, Any] | None:
        """The newest job of this task: ``name`` itself or a retry's ``name-<timestamp>``."""
        kind = self._job_type.lower()
        listed = getattr(self.hook.conn, f"list_{kind}_jobs")(
            NameContains=name, SortBy="CreationTime", SortOrder="Descending", MaxResults=50
        )[f"{self._job_type}JobSummaries"]
        attempt = re.compile(re.escape(name) + r"(-\d{10})?")
        for summary in listed:
            if attempt.fullmatch(summary[f"{self._job_type}JobName"]):
                return getattr(self.hook, f"describe_{kind}_job")(summary[f"{self._job_type}JobName"])
        return None

    def _reattach(self, context: Any) -> Any | None:
        """The existing job's result, or a deferral onto it; ``None`` when a new job must start."""
        existing = self._latest_attempt(self.config[f"{self._job_type}JobName"])
        if existing is None:
            return None
        name = existing[f"{self._job_type}JobName"]
        status = existing[f"{self._job_type}JobStatus"]
        if status == "Completed":
            self.log.info("SageMaker %s job %s already completed: reusing it", self._job_type.lower(), name)
            return self.execute_complete(context, {"status": "success", "job_name": name})
        if status in _RUNNING:
            self.log.info("SageMaker %s job %s is %s: waiting for it", self._job_type.lower(), name, status)
            self.defer(
                trigger=SageMakerTrigger(
                    job_name=name,
                    job_type=self._job_type,
                    waiter_delay=self.check_interval,
                    waiter_max_attempts=self.max_attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
            )
        self.log.warning("SageMaker %s job %s ended %s: starting a new one", self._job_type.lower(), name, status)
        return None


class ReattachingTrainingOperator(_ReattachMixin, SageMakerTrainingOperator):
    """``SageMakerTrainingOperator`` that re-attaches to its own job (see the module docstring)."""

    _job_type = "Training"

    def execute(self, context: Any) -> dict:
        found = self._reattach(context)
        return found if found is not None else super().execute(context)


class ReattachingProcessingOperator(_ReattachMixin, SageMakerProcessingOperator):
    """``SageMakerProcessingOperator`` that re-attaches to its own job (see the module docstring)."""

    _job_type = "Processing"

    def execute(self, context: Any) -> dict:
        found = self._reattach(context)
        return found if found is not None else super().execute(context)


class RegisterModelVersionOperator(SageMakerRegisterModelVersionOperator):
    """``SageMakerRegisterModelVersionOperator`` with templated ``extras``."""

    template_fields = (*SageMakerRegisterModelVersionOperator.template_fields, "extras")
