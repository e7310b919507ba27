"""Model registry, Compact architecture, ncnn reader, weight lookup, and the inference engine."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import numpy as np
import pytest
import torch

from reelforge_sr.engine import MIN_OVERLAP, Upscaler
from reelforge_sr.errors import ModelError
from reelforge_sr.models import MODELS, SRVGGNetCompact, load_model, resolve, tensor_sha256
from reelforge_sr.models import weights as weights_mod
from reelforge_sr.models.ncnn import load_ncnn_compact
from reelforge_sr.quality import psnr


def test_registry_has_official_urls_hashes_and_aliases():
    anime = MODELS["realesr-animevideov3"]
    assert anime.url.endswith("/v0.2.5.0/realesr-animevideov3.pth")
    assert anime.sha256[0].startswith("b8a83768")
    general = MODELS["realesr-general-x4v3"]
    assert general.sha256 == ("8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",)
    assert (general.num_conv, general.scale, general.kind) == (32, 4, "live-action")
    assert MODELS["RealESRGANv2-animevideo-xsx2"].scale == 2
    assert resolve("anime").name == "realesr-animevideov3" and resolve("live-action").name == "realesr-general-x4v3"
    with pytest.raises(ModelError, match="unknown model"):
        resolve("esrgan-9000")


def test_local_rezipped_copy_is_accepted_by_file_hash_and_tensor_hash(model_dir):
    loaded = load_model("realesr-animevideov3", model_dir)
    assert loaded.source["format"] == "pth"
    state = torch.load(model_dir / "realesr-animevideov3.pth", map_location="cpu", weights_only=True)["params"]
    assert tensor_sha256(state) == MODELS["realesr-animevideov3"].tensor_sha256[0]


def test_tensor_hash_accepts_a_rezipped_copy_with_an_unlisted_file_hash(model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("REELFORGE_MODEL_DIR", raising=False)
    state = torch.load(model_dir / "realesr-animevideov3.pth", map_location="cpu", weights_only=True)
    torch.save(state, tmp_path / "realesr-animevideov3.pth")  # new zip container, same tensors
    assert weights_mod.file_sha256(tmp_path / "realesr-animevideov3.pth") not in MODELS["realesr-animevideov3"].sha256
    loaded = load_model("realesr-animevideov3", tmp_path)
    assert loaded.source["verified_by"] == "tensor-sha256"


def test_ncnn_reader_reproduces_the_pth_within_fp16(model_dir):
    state, hp = load_ncnn_compact(model_dir / "ncnn/realesr-animevideov3-x4.param",
                                  model_dir / "ncnn/realesr-animevideov3-x4.bin")
    ref = torch.load(model_dir / "realesr-animevideov3.pth", map_location="cpu", weights_only=True)["params"]
    assert hp == {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_conv": 16, "upscale": 4}
    assert set(state) == set(ref)
    for key, value in ref.items():
        if value.dim() == 4:  # conv weights: stored fp16 in ncnn
            # fp16 keeps 10 mantissa bits; this conversion flushed fp16 subnormals (|w| < 2^-14) to zero
            bound = torch.maximum(value.abs() * 2**-10, torch.full_like(value, 2**-14))
            assert ((state[key] - value).abs() <= bound).all(), key
        else:  # biases and PReLU slopes: fp32, bit-identical
            assert torch.equal(state[key], value), key
    # the same check tells different models apart
    other = torch.load(model_dir / "RealESRGANv2-animevideo-xsx4.pth", map_location="cpu", weights_only=True)["params"]
    assert (state["body.0.weight"] - other["body.0.weight"]).abs().max() > 0.1


def test_live_action_model_loads_from_ncnn_when_pth_absent(model_dir):
    loaded = load_model("live-action", model_dir)
    assert loaded.spec.name == "realesr-general-x4v3"
    assert loaded.source["format"] == "ncnn"
    assert tensor_sha256(loaded.net.state_dict()) == MODELS["realesr-general-x4v3"].ncnn[0].tensor_sha256[0]
    assert loaded.net.num_conv == 32 and loaded.net.receptive_radius == 34
    out = loaded.net(torch.rand(1, 3, 12, 20))
    assert out.shape == (1, 3, 48, 80)


def test_missing_weights_offline_name_file_dir_and_url(tmp_path, monkeypatch):
    monkeypatch.delenv("REELFORGE_MODEL_DIR", raising=False)
    with pytest.raises(ModelError) as err:
        load_model("realesr-general-x4v3", tmp_path / "empty")
    msg = str(err.value)
    assert "realesr-general-x4v3.pth" in msg and str(tmp_path / "empty") in msg
    assert "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth" in msg


def test_a_wrong_file_under_the_right_name_is_rejected(model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("REELFORGE_MODEL_DIR", raising=False)
    shutil.copy(model_dir / "RealESRGANv2-animevideo-xsx4.pth", tmp_path / "realesr-animevideov3.pth")
    with pytest.raises(ModelError, match="not an accepted hash"):
        load_model("realesr-animevideov3", tmp_path)


def test_download_goes_to_a_temp_name_is_verified_then_renamed(model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("REELFORGE_MODEL_DIR", raising=False)
    src = model_dir / "RealESRGANv2-animevideo-xsx2.pth"
    spec = dataclasses.replace(MODELS["RealESRGANv2-animevideo-xsx2"], url=src.as_uri())
    monkeypatch.setitem(MODELS, spec.name, spec)
    target = tmp_path / "models"
    loaded = load_model(spec.name, target, allow_download=True)
    assert loaded.source["downloaded"] == "1" and (target / spec.filename).is_file()
    assert loaded.net.upscale == 2
    assert not list(target.glob(".*part"))

    bad = dataclasses.replace(spec, sha256=(hashlib.sha256(b"other").hexdigest(),), tensor_sha256=())
    monkeypatch.setitem(MODELS, spec.name, bad)
    with pytest.raises(ModelError, match="sha256"):
        load_model(spec.name, tmp_path / "models2", allow_download=True)
    assert not (tmp_path / "models2" / spec.filename).exists()
    assert not list((tmp_path / "models2").glob(".*"))


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, h // 3 + 1, w // 3 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 3, 1), 3, 2)[:, :h, :w])


def test_tiled_output_equals_whole_frame_output(model_dir):
    net = load_model("anime", model_dir).net
    frames = _frames(2, 40, 72)
    whole = Upscaler(net, threads=2, max_pixels=10**6, precision="fp32")
    tiled = Upscaler(net, threads=2, max_pixels=48 * 48, precision="fp32")
    assert tiled.overlap >= MIN_OVERLAP and len(tiled.tile_grid(40, 72)) > 1
    a, b = whole(frames), tiled(frames)
    assert a.shape == (2, 160, 288, 3)
    assert np.abs(a.astype(int) - b).max() <= 1  # fp32 summation order only


def test_engine_matches_plain_nchw_reference_and_handles_16_bit_and_x3(model_dir):
    net = load_model("anime", model_dir).net
    frames = _frames(3, 30, 40, seed=1)
    out = Upscaler(net, threads=2, precision="fp32")(frames)
    ref_net = SRVGGNetCompact(num_conv=16)
    ref_net.load_state_dict(net.state_dict())
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous() / 255
        ref = (ref_net(x).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(int) - ref).max() <= 1
    out16 = Upscaler(net, threads=2, precision="fp32")(frames.astype(np.uint16) * 257)
    assert out16.dtype == np.uint16 and np.abs(out16.astype(int) // 257 - out).max() <= 1
    # bf16 (the CPU default where the CPU has bf16 instructions) stays close to fp32
    assert psnr(Upscaler(net, threads=2, precision="bf16")(frames), ref) > 40
    x3 = Upscaler(net, threads=2, scale=3)(frames)
    assert x3.shape == (3, 90, 120, 3)
    with pytest.raises(ModelError, match="x2 network"):
        Upscaler(load_model("RealESRGANv2-animevideo-xsx2", model_dir).net, scale=4)
