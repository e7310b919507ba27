"""The Airflow side of the AnimateAnyone workflow: sweep planning, manifests, MLflow REST and ranking."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from reelforge.animate_anyone import tasks
from reelforge.animate_anyone.manifest import parse_manifest
from reelforge.animate_anyone.mlflow_rest import MlflowRest, pick_best, summarize
from reelforge.animate_anyone.settings import AASettings
from reelforge.animate_anyone.sweep import SweepError, exp_name, expand_grid, training_id, validate_overrides
from reelforge.storage import InvalidSourceError


def test_grid_is_the_cartesian_product_in_key_order():
    points = expand_grid({"solver.learning_rate": [1e-5, 3e-5], "noise_offset": [0.05, 0.1, 0.2]}, 16)
    assert len(points) == 6
    assert points[0] == {"solver.learning_rate": 1e-5, "noise_offset": 0.05}
    assert points[-1] == {"solver.learning_rate": 3e-5, "noise_offset": 0.2}
    assert expand_grid({}, 4) == [{}]


@pytest.mark.parametrize(
    "grid",
    [
        {"solver.learning_rate": []},
        {"solver.learning_rate": [1, 1]},
        {"solver.learning_rate": 1e-5},
        {"bad key": [1]},
        {"output_dir": ["/tmp/x"]},
        {"resume_from_checkpoint": [""]},
        {"solver.learning_rate": [{"nested": 1}]},
    ],
)
def test_bad_grids_are_refused(grid):
    with pytest.raises(SweepError):
        expand_grid(grid, 16)


def test_grid_size_is_capped():
    with pytest.raises(SweepError, match="more than the limit"):
        expand_grid({"a": [1, 2, 3], "b": [1, 2, 3]}, 8)


def test_overrides_accept_json_text_and_refuse_pipeline_keys():
    assert validate_overrides('{"solver.max_train_steps": 10}') == {"solver.max_train_steps": 10}
    with pytest.raises(SweepError):
        validate_overrides({"data.meta_paths": ["/x"]})
    with pytest.raises(SweepError):
        validate_overrides("[1, 2]")


def test_run_names_are_distinct_and_stable():
    points = expand_grid({"solver.learning_rate": [1e-5, 3e-5, 5e-5]}, 16)
    names = [exp_name(i, p) for i, p in enumerate(points)]
    assert len(set(names)) == 3 and names == [exp_name(i, p) for i, p in enumerate(points)]
    assert exp_name(0, points[0]) != exp_name(0, points[1])  # same index, other point
    a = training_id("animate_anyone_training", "manual__2026-01-01T00:00:00+00:00")
    b = training_id("animate_anyone_training", "manual__2026-01-01T00:00:01+00:00")
    assert a != b and all(c.isalnum() or c in "._-" for c in a)
    assert a == training_id("animate_anyone_training", "manual__2026-01-01T00:00:00+00:00")


def test_manifest_validation():
    good = json.dumps([{"video_path": "/fsx/a.mp4", "kps_path": "/fsx/a_kps.mp4"}]).encode()
    assert len(parse_manifest(good)) == 1
    assert len(parse_manifest(json.dumps({"entries": json.loads(good)}).encode())) == 1
    for bad in (b"not json", b"[]", b'[{"video_path": "/a.mp4"}]', b'["x"]', b'{"entries": 3}'):
        with pytest.raises(InvalidSourceError):
            parse_manifest(bad)


def _run(run_id, index, **metrics):
    return summarize({"info": {"run_id": run_id, "status": "FINISHED"},
                      "data": {"metrics": [{"key": k, "value": v} for k, v in metrics.items()],
                               "tags": [{"key": "reelforge.sweep_index", "value": str(index)}]}})


def test_pick_best_by_min_and_max_with_ties_to_the_lower_index():
    runs = [_run("a", 0, val_loss=0.3), _run("b", 1, val_loss=0.1), _run("c", 2, val_loss=0.1), _run("d", 3)]
    best, ranked = pick_best(runs, "val_loss", "min")
    assert best["run_id"] == "b" and [r["run_id"] for r in ranked] == ["b", "c", "a"]
    assert pick_best(runs, "val_loss", "max")[0]["run_id"] == "a"
    assert pick_best([*runs, _run("nan", 4, val_loss=float("nan"))], "val_loss")[0]["run_id"] == "b"
    with pytest.raises(LookupError):
        pick_best(runs, "accuracy")


class _FakeMlflow(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args):
        pass

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
        if "get-by-name" in self.path and "missing" in self.path:
            self.send_response(404)
            body = b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._reply({"experiment": {"experiment_id": "7", "name": "x"}})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                              "body": json.loads(body), "raw": body})
        page = json.loads(body).get("page_token")
        if page is None:
            self._reply({"runs": [{"info": {"run_id": "r1"}, "data": {}}], "next_page_token": "p2"})
        else:
            self._reply({"runs": [{"info": {"run_id": "r2"}, "data": {}}]})


@pytest.fixture
def fake_mlflow():
    _FakeMlflow.requests = []
    server = HTTPServer(("127.0.0.1", 0), _FakeMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeMlflow.requests
    server.shutdown()


def test_rest_client_searches_with_paging(fake_mlflow):
    url, seen = fake_mlflow
    client = MlflowRest(url)
    assert client.experiment_id("reelforge-animate-anyone") == "7"
    assert client.experiment_id("missing") is None
    runs = client.search_runs(["7"], "tags.`reelforge.training_id` = 'abc'", ["metrics.val_loss ASC"])
    assert [r["info"]["run_id"] for r in runs] == ["r1", "r2"]
    posts = [r for r in seen if r["method"] == "POST"]
    assert posts[0]["path"] == "/api/2.0/mlflow/runs/search"
    assert posts[0]["body"]["filter"] == "tags.`reelforge.training_id` = 'abc'"
    assert posts[1]["body"]["page_token"] == "p2"
    assert "Authorization" not in posts[0]["headers"]


def test_sagemaker_arn_requests_are_sigv4_signed(fake_mlflow, monkeypatch):
    url, seen = fake_mlflow
    monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", url)
    monkeypatch.setenv("AIRFLOW_CONN_AA_TEST_AWS", json.dumps(
        {"conn_type": "aws", "login": "AKIDEXAMPLE", "password": "secret", "extra": {"region_name": "eu-west-1"}}))
    arn = "arn:aws:sagemaker:eu-west-1:111122223333:mlflow-tracking-server/reelforge-mlflow"
    client = MlflowRest(arn, aws_conn_id="aa_test_aws")
    client.search_runs(["7"], "tags.x = 'y'")
    post = next(r for r in seen if r["method"] == "POST")
    headers = {k.lower(): v for k, v in post["headers"].items()}
    assert headers["x-mlflow-sm-tracking-server-arn"] == arn
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/sagemaker-mlflow/aws4_request" in headers["authorization"]
    assert headers["x-amz-content-sha256"] == hashlib.sha256(post["raw"]).hexdigest()
    with pytest.raises(ValueError):
        MlflowRest("file:///tmp/mlruns")


def _settings(**kw) -> AASettings:
    base = dict(cluster_work_root="/fsx/reelforge", output_bucket="reelforge-output", output_prefix="animate-anyone/",
                topic_arn="t", mlflow_tracking_uri="http://127.0.0.1:5055", mlflow_experiment="exp", venv="/v",
                container_image="", container_mounts="/fsx:/fsx", code_dir="/code", model_dir="/models",
                launcher="accelerate", deepspeed_config="/ds.json", partition="gpu", export_partition="cpu",
                gres="gpu:8", gpus_per_node=8, cpus_per_task=96, time_limit_stage1="1-00:00:00",
                time_limit_stage2="1-00:00:00", sbatch_args=("--exclusive",), auto_resume="auto", max_sweep_runs=8,
                max_nodes=4, max_manifest_bytes=1 << 20)
    base.update(kw)
    return AASettings(**base)


def test_plan_sweep_gives_every_run_its_own_dir_key_and_nodes(monkeypatch):
    monkeypatch.setattr(tasks, "aa_settings", _settings)
    staged = {"training_id": "tid", "root": "/fsx/reelforge/animate-anyone/tid",
              "manifest_path": "/fsx/reelforge/animate-anyone/tid/data/manifest.json", "manifest_uri": "s3://b/m.json"}
    params = {"payload": "animate-anyone", "nodes": 2, "sweep_grid": {"solver.learning_rate": [1e-5, 3e-5, 5e-5]},
              "config_overrides": {"solver.max_train_steps": 100}, "stage1_overrides": {"seed": 7}}
    jobs = tasks.plan_sweep(staged=staged, params=params, dag_id="d", run_id="r")
    assert len(jobs) == 3
    assert len({j["workdir"] for j in jobs}) == 3 and len({j["env"]["AA_RUN_KEY"] for j in jobs}) == 3
    for job in jobs:
        env = job["env"]
        assert job["workdir"] == f"{env['AA_OUTPUT_DIR']}/{env['AA_EXP_NAME']}"
        assert job["extra_args"] == ["--nodes=2", "--exclusive"] and job["gres"] == "gpu:8"
        overrides = json.loads(env["AA_OVERRIDES"])
        assert overrides["solver.max_train_steps"] == 100 and overrides["seed"] == 7
        assert env["AA_LAUNCHER"] == "accelerate" and env["AA_DEEPSPEED_CONFIG"] == "/ds.json"
        assert json.loads(env["AA_MLFLOW_TAGS"])["reelforge.training_id"] == "tid"
    runs = tasks.runs_from_jobs(jobs)
    assert [r["point"]["solver.learning_rate"] for r in runs] == [1e-5, 3e-5, 5e-5]

    smoke = tasks.plan_sweep(staged=staged, params={**params, "payload": "smoke"}, dag_id="d", run_id="r")
    assert smoke[0]["env"]["AA_LAUNCHER"] == "torchrun" and smoke[0]["env"]["AA_DEEPSPEED_CONFIG"] == ""


@pytest.mark.parametrize("params", [{"nodes": 5}, {"nodes": 0}, {"sweep_grid": {"a": [1] * 1}, "payload": "x"},
                                    {"config_overrides": {"exp_name": "x"}}])
def test_plan_sweep_fails_fast_on_bad_input(monkeypatch, params):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setattr(tasks, "aa_settings", _settings)
    staged = {"training_id": "t", "root": "/r", "manifest_path": "/r/m.json", "manifest_uri": "s3://b/m"}
    with pytest.raises(AirflowFailException):
        tasks.plan_sweep(staged=staged, params={"nodes": 1, **params}, dag_id="d", run_id="r")
