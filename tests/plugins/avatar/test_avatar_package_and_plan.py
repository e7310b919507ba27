"""Pure checks of the avatar workflow: unsafe packages, manifests, selfie sets, names, the request contract."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime

import pytest

from reelforge.avatar.package import PackageError, inspect_package, verify_manifest
from reelforge.avatar.plan import check_selfies, form_params, model_name, plan_avatar
from reelforge.avatar.settings import AvatarSettings
from reelforge.avatar.watch import selfies_from_marker
from reelforge.sagemaker_requests import InvalidParamsError

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 12


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, body in members:
            info.size = len(body) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(body) if info.isfile() else None)
    buffer.seek(0)
    return buffer


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


NAME = "avatar-u-1"
WEIGHTS = f"{NAME}/1/lora/pytorch_lora_weights.safetensors"


def good_members(**manifest_fields) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The container's layout: one Triton model folder, the manifest in its version folder."""
    files = {f"{NAME}/config.pbtxt": b'name: "avatar-u-1"', f"{NAME}/1/model.py": b"# entry", WEIGHTS: b"lora" * 100}
    manifest = {"model_name": NAME, "base_model_id": "base", "base_model_revision": "rev", "lora_rank": 8,
                "max_train_steps": 100, "token": "zwx", "lora_weights": WEIGHTS,
                "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}, **manifest_fields}
    return [*((member(n), b) for n, b in files.items()),
            (member(f"{NAME}/1/manifest.json"), json.dumps(manifest).encode())]


EXPECTED = {"model_name": NAME, "base_model_id": "base", "base_model_revision": "rev", "lora_rank": 8,
            "max_train_steps": 100, "token": "zwx"}


def inspect(members, max_unpacked_bytes: int = 10**6) -> dict:
    return inspect_package(tar_of(members), model_name=NAME, max_unpacked_bytes=max_unpacked_bytes)


def test_a_good_package_passes():
    assert verify_manifest(inspect(good_members()), EXPECTED) == []


@pytest.mark.parametrize("bad", [
    member("/etc/passwd"), member("../escape"), member(f"{NAME}/../../b"),
    member(f"{NAME}/link", tarfile.SYMTYPE, "/etc/passwd"), member(f"{NAME}/hard", tarfile.LNKTYPE, WEIGHTS),
    member(f"{NAME}/dev", tarfile.CHRTYPE), member("other-model/1/model.py"),
], ids=["absolute", "dotdot", "nested-dotdot", "symlink", "hardlink", "device", "outside-the-model"])
def test_unsafe_members_are_refused(bad):
    with pytest.raises(PackageError):
        inspect([*good_members(), (bad, b"x")])


def test_size_limit_and_missing_manifest():
    with pytest.raises(PackageError, match="unpacks to more than"):
        inspect(good_members(), max_unpacked_bytes=100)
    with pytest.raises(PackageError, match=f"no {NAME}/1/manifest.json"):
        inspect(good_members()[:-1])
    with pytest.raises(PackageError, match="not a readable"):
        inspect_package(io.BytesIO(b"not a tarball"), model_name=NAME, max_unpacked_bytes=10**6)


def test_wrong_sha_extra_files_missing_triton_files_and_another_base_model_are_reported():
    members = good_members(base_model_revision="other")
    manifest = json.loads(members[-1][1])
    manifest["files"][WEIGHTS] = "0" * 64
    del manifest["files"][f"{NAME}/config.pbtxt"]
    members = [m for m in members[:-1] if m[0].name != f"{NAME}/config.pbtxt"]
    found = inspect([*members, (member(f"{NAME}/stray.bin"), b"?"),
                     (member(f"{NAME}/1/manifest.json"), json.dumps(manifest).encode())])
    problems = " | ".join(verify_manifest(found, EXPECTED))
    assert f"'{WEIGHTS}': sha256" in problems
    assert f"files not in the manifest: {NAME}/stray.bin" in problems
    assert f"'{NAME}/config.pbtxt' (Triton model files and LoRA weights) is not in the manifest" in problems
    assert "base_model_revision is 'other', expected 'rev'" in problems


def settings(**overrides) -> AvatarSettings:
    from dataclasses import fields

    values = {f.name: f"x-{f.name}" for f in fields(AvatarSettings)}
    values.update(min_selfies=2, max_selfies=3, max_selfie_bytes=1000, max_total_bytes=2500, mixed_precision="fp16",
                  artifacts_bucket="art", artifacts_prefix="avatar/", mme_bucket="art", mme_prefix="avatar/mme/",
                  output_bucket="out", output_prefix="avatar/", learning_rate=1e-4, gradient_accumulation_steps=1,
                  seed=0, processing_volume_gb=30, finetune_setup_s=300.0, finetune_class_image_s=4.0,
                  finetune_step_s=0.9, sample_step_s=0.15, sample_overhead_s=3.0, sample_steps=30)
    return AvatarSettings(**{**values, **overrides})


def obj(key: str, size: int = 100) -> dict:
    return {"Key": key, "Size": size}


def test_selfie_sets_are_checked_early_with_clear_reasons():
    s = settings()
    keys = ["u/s/a.jpg", "u/s/b.JPEG"]
    assert check_selfies([*map(obj, keys), obj("u/s/_READY", 0)], dict.fromkeys(keys, JPEG), s) == sorted(keys)
    with pytest.raises(InvalidParamsError, match="at most 3 selfies"):
        check_selfies([obj(f"u/s/{i}.jpg") for i in range(4)], {}, s)
    with pytest.raises(InvalidParamsError, match="at most 2500"):
        check_selfies([obj("u/s/a.jpg", 900), obj("u/s/b.jpg", 900), obj("u/s/c.jpg", 900)], {}, s)
    with pytest.raises(InvalidParamsError) as refused:
        check_selfies([obj("u/s/a.jpg"), obj("u/s/huge.png", 5000), obj("u/s/x.gif"), obj("u/s/bad\n.jpg")],
                      {"u/s/a.jpg": b"GIF89a"}, settings(max_selfies=5, max_total_bytes=10**6))
    message = str(refused.value)
    assert "refused 4 of 4" in message and "'huge.png': 5000 bytes" in message and "'x.gif': not an image" in message
    assert "control characters" in message and "'a.jpg': content is not JPEG" in message
    with pytest.raises(InvalidParamsError, match="at least 2"):
        check_selfies([obj("u/s/a.jpg")], {"u/s/a.jpg": JPEG}, s)


FORM = {"user_id": "Jane.Doe_42", "selfies_uri": "s3://in/avatar/incoming/jane/s/", "steps": 400, "lora_rank": 16,
        "token": "zwx", "samples": 3, "prompt": "a portrait of {token} person"}


def test_model_name_is_deterministic_safe_and_per_run():
    name = model_name("Jane.Doe_42", "manual__2026-01-01T00:00:00+00:00")
    assert name == model_name("Jane.Doe_42", "manual__2026-01-01T00:00:00+00:00")
    assert name != model_name("Jane.Doe_42", "manual__2026-01-02T00:00:00+00:00")
    assert name.startswith("avatar-jane-doe-42-") and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_the_request_follows_the_container_contract():
    plan = plan_avatar(p=form_params(FORM), run_id="manual__r", run_after=datetime(2026, 1, 1, tzinfo=UTC),
                       settings=settings())
    request = plan["request"]
    assert list(request) == ["job_name", "instance_data_uri", "class_data_uri", "output_s3_uri", "model_name", "token",
                             "class_prompt", "base_model_id", "base_model_revision", "max_train_steps", "lora_rank",
                             "learning_rate", "gradient_accumulation_steps", "mixed_precision", "seed",
                             "num_class_images"]
    assert request["instance_data_uri"] == f"s3://art/avatar/runs/{plan['key']}/crops/"
    assert request["output_s3_uri"] == f"s3://art/avatar/runs/{plan['key']}/model/model.tar.gz"
    assert (request["max_train_steps"], request["lora_rank"], request["class_data_uri"]) == (400, 16, None)
    assert plan["registered_uri"] == f"s3://art/avatar/mme/{plan['model_name']}.tar.gz"
    assert plan["prep_config"]["AppSpecification"]["ContainerEntrypoint"] == ["reelforge-avatar", "preprocess"]
    assert plan == plan_avatar(p=form_params(FORM), run_id="manual__r", run_after=datetime(2026, 1, 1, tzinfo=UTC),
                               settings=settings())


@pytest.mark.parametrize("change, reason", [
    ({"user_id": "../x"}, "user_id"), ({"lora_rank": 5}, "lora_rank"), ({"prompt": "no token"}, "prompt"),
    ({"selfies_uri": "s3://in/one.jpg"}, "prefix"), ({"samples": 0}, "samples"), ({"token": "a b"}, "token"),
    ({"class_images": 0}, "class_images"),
])
def test_bad_forms_are_refused(change, reason):
    with pytest.raises(InvalidParamsError, match=reason):
        form_params({**FORM, **change})


def test_an_upload_marker_names_the_user_and_the_set():
    s = settings(ingest_bucket="in", ingest_prefix="avatar/incoming/")
    assert selfies_from_marker("in", "avatar/incoming/jane/2026-05/_READY", s.ingest_bucket, s.ingest_prefix) == (
        "jane", "s3://in/avatar/incoming/jane/2026-05/")
    for bucket, key in [("in", "avatar/incoming/jane/2026-05/a.jpg"), ("other", "avatar/incoming/jane/s/_READY"),
                        ("in", "avatar/incoming/_READY"), ("in", "avatar/incoming/a/b/c/_READY"),
                        ("in", "avatar/incoming/../x/_READY")]:
        assert selfies_from_marker(bucket, key, s.ingest_bucket, s.ingest_prefix) is None, key
