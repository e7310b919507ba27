"""Re-attaching SageMaker operators: reuse a completed job, wait for a running one, replace a failed one.

The hook is replaced by a fake SageMaker that holds jobs in a dict (the local endpoint completes every
job at once, so it cannot show a job still running).
"""

from __future__ import annotations

from unittest import mock

import pytest
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.sdk.exceptions import TaskDeferred

from reelforge.operators.sagemaker_reattach import ReattachingProcessingOperator, ReattachingTrainingOperator


class FakeSageMaker:
    def __init__(self, kind: str, jobs: dict[str, str]) -> None:
        self.kind, self.jobs = kind, jobs  # name -> status, oldest first

    def _list(self, NameContains, SortBy, SortOrder, MaxResults):  # noqa: N803 - boto3's names
        names = [n for n in reversed(list(self.jobs)) if NameContains in n]
        return {f"{self.kind}JobSummaries": [{f"{self.kind}JobName": n} for n in names]}

    def _describe(self, name):
        return {f"{self.kind}JobName": name, f"{self.kind}JobStatus": self.jobs[name]}

    @property
    def conn(self):
        return mock.Mock(list_training_jobs=self._list, list_processing_jobs=self._list)

    def __getattr__(self, attr):
        if attr.startswith("describe_"):
            return self._describe
        raise AttributeError(attr)


def operator(cls, kind: str, jobs: dict[str, str]):
    op = cls(task_id="t", config={f"{kind}JobName": "reelforge-sg2-train-20260101000000-abcdef"}, deferrable=True)
    op.__dict__["hook"] = FakeSageMaker(kind, jobs)
    return op


NAME = "reelforge-sg2-train-20260101000000-abcdef"


def test_a_completed_job_is_reused():
    op = operator(ReattachingTrainingOperator, "Training", {NAME: "Completed"})
    with mock.patch.object(SageMakerTrainingOperator, "execute_complete", return_value={"Training": "x"}) as done, \
            mock.patch.object(SageMakerTrainingOperator, "execute") as start:
        assert op.execute({}) == {"Training": "x"}
    done.assert_called_once_with({}, {"status": "success", "job_name": NAME})
    start.assert_not_called()


def test_a_running_retry_job_is_waited_for_not_duplicated():
    op = operator(ReattachingTrainingOperator, "Training", {NAME: "Failed", f"{NAME}-1767225600": "InProgress",
                                                             f"{NAME}-other": "Completed"})
    with mock.patch.object(SageMakerTrainingOperator, "execute") as start, pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    start.assert_not_called()
    assert deferred.value.trigger.job_name == f"{NAME}-1767225600"
    assert deferred.value.method_name == "execute_complete"


@pytest.mark.parametrize("status", ["Failed", "Stopped", None])
def test_a_failed_or_missing_job_starts_a_new_one(status):
    jobs = {NAME: status} if status else {}
    op = operator(ReattachingProcessingOperator, "Processing", jobs)
    with mock.patch("airflow.providers.amazon.aws.operators.sagemaker.SageMakerProcessingOperator.execute",
                    return_value={"Processing": "new"}) as start:
        assert op.execute({}) == {"Processing": "new"}
    start.assert_called_once()
