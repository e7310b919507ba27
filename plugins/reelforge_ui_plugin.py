"""The ``reelforge_ui`` Airflow plugin: the extra links of :mod:`reelforge.links`.

Links defined on our operators (``SlurmJobOperator``, ``SageMakerInvokeAsyncOperator``) are listed here so
that the plugin page names them; the SageMaker links name the provider operators (and our subclasses
of them) they are added to, and the API server builds them from each task's return value.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointOperator,
    SageMakerProcessingOperator,
    SageMakerTrainingOperator,
)

from reelforge.links import (
    SLURM_LINKS,
    SageMakerDeployedEndpointLink,
    SageMakerEndpointLink,
    SageMakerProcessingJobLink,
    SageMakerTrainingJobLink,
    SageMakerTrainingLogsLink,
)


def _with_subclasses(*classes: type) -> list[type]:
    """The classes and our subclasses of them (matched by class name and module when a DAG is loaded)."""
    from reelforge.avatar.endpoints import EnsureEndpointOperator
    from reelforge.operators.sagemaker_reattach import ReattachingProcessingOperator, ReattachingTrainingOperator

    ours = (ReattachingTrainingOperator, ReattachingProcessingOperator, EnsureEndpointOperator)
    return [*classes, *(c for c in ours if issubclass(c, classes))]


class ProviderTrainingJobLink(SageMakerTrainingJobLink):
    operators = _with_subclasses(SageMakerTrainingOperator)


class ProviderTrainingLogsLink(SageMakerTrainingLogsLink):
    operators = _with_subclasses(SageMakerTrainingOperator)


class ProviderProcessingJobLink(SageMakerProcessingJobLink):
    operators = _with_subclasses(SageMakerProcessingOperator)


class ProviderEndpointLink(SageMakerDeployedEndpointLink):
    operators = _with_subclasses(SageMakerEndpointOperator)


class ReelForgeUIPlugin(AirflowPlugin):
    name = "reelforge_ui"
    operator_extra_links = [
        *SLURM_LINKS,
        SageMakerEndpointLink(),
        ProviderTrainingJobLink(),
        ProviderTrainingLogsLink(),
        ProviderProcessingJobLink(),
        ProviderEndpointLink(),
    ]
