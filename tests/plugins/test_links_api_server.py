"""The SageMaker links the plugin adds to provider operators, evaluated as the API server does.

A throwaway Airflow home (SQLite) with a one-task DAG: the DAG is serialised to the database, a run and the
operator's return value (a training job's description) are written there, and the task loaded back from
the database gives the link URLs (no task SDK, no supervisor: the API server's situation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DAG = '''
import pendulum
from airflow.sdk import DAG
from reelforge.operators.sagemaker_reattach import ReattachingTrainingOperator

with DAG("links_dag", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    ReattachingTrainingOperator(task_id="train", config={"TrainingJobName": "x"}, aws_conn_id=None)
'''

CHECK = '''
import json
from airflow.api.common.trigger_dag import trigger_dag
from airflow.models.serialized_dag import SerializedDagModel
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from airflow.utils.types import DagRunTriggeredByType
from sqlalchemy import select

trigger_dag("links_dag", run_id="manual__links", conf={}, triggered_by=DagRunTriggeredByType.TEST)
XComModel.set(key="return_value", dag_id="links_dag", task_id="train", run_id="manual__links", value={
    "Training": {"TrainingJobName": "sg2-run-train",
                 "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:111122223333:training-job/sg2-run-train"}})
with create_session() as session:
    task = SerializedDagModel.get_dag("links_dag", session=session).get_task("train")
    ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == "links_dag"))
    print(json.dumps({name: task.get_extra_links(ti, name) for name in task.extra_links}))
'''


def test_provider_training_operator_links_from_the_database(tmp_path):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "links_dag.py").write_text(DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path / "home"), AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               PYTHONPATH=str(ROOT / "plugins"))
    airflow = [sys.executable, "-m", "airflow"]
    for argv in ([*airflow, "db", "migrate"], [*airflow, "dags", "reserialize"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    links = json.loads(done.stdout.strip().splitlines()[-1])
    assert links == {
        "SageMaker training job": "https://console.aws.amazon.com/sagemaker/home?region=eu-west-1#/jobs/sg2-run-train",
        "Training logs (CloudWatch)": "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:"
        "log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3Dsg2-run-train",
    }
