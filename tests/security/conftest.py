"""The session's one Airflow and the AWS clients, shared with tests/reliability."""

from tests.reliability.conftest import airflow, aws, sns_inbox  # noqa: F401
