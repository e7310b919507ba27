"""TorchScript export and batch generation / projection on a small real generator built here."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reelforge_stylegan2.cli import main
from reelforge_stylegan2.export import ExportError, export_generator, load_exported
from reelforge_stylegan2.generate import Generator, parse_seeds, project
from reelforge_stylegan2.sm import UserError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def exported(tiny_generator, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "generator.pt"
    meta = export_generator(tiny_generator, path, source="test", w_std_samples=2000)
    return path, meta


def test_export_reproduces_the_generator_with_truncation_and_const_noise(tiny_generator, exported):
    path, meta = exported
    assert {k: meta[k] for k in ("z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "img_channels")} == {
        "z_dim": 16, "c_dim": 0, "w_dim": 16, "num_ws": 3, "img_resolution": 16, "img_channels": 3}
    assert meta["w_std"] > 0
    module, loaded_meta = load_exported(path)
    assert loaded_meta == meta
    z = torch.from_numpy(np.random.RandomState(7).randn(1, 16)).float()
    c = torch.zeros(1, 0)
    for psi in (1.0, 0.5):
        with torch.no_grad():
            expected = tiny_generator(z, c, truncation_psi=psi, noise_mode="const")
            got = module(z, c, torch.tensor([psi]))
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # psi is an input of the trace, not a constant: different psi, different image
    assert not torch.allclose(module(z, c, torch.tensor([0.0])), module(z, c, torch.tensor([1.0])))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_export_refuses_a_generator_it_cannot_trace_faithfully(tiny_generator, tmp_path):
    class RandomNoise(torch.nn.Module):  # ignores noise_mode: every call differs, the trace cannot match
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ws, noise_mode="random", force_fp32=False):
            return self.inner(ws, noise_mode="random")

    import copy

    G = copy.deepcopy(tiny_generator)
    G.synthesis = RandomNoise(G.synthesis)
    with pytest.raises(ExportError, match="differs from the generator"):
        export_generator(G, tmp_path / "g.pt", w_std_samples=100)
    assert not (tmp_path / "g.pt").exists()


def test_parse_seeds():
    assert parse_seeds("0-3, 7,2") == [0, 1, 2, 3, 7]
    assert parse_seeds([5, "6-7"]) == [5, 6, 7]
    with pytest.raises(UserError):
        parse_seeds("1;2")
    with pytest.raises(UserError):
        parse_seeds("5-1")


def test_generate_seeds_from_model_tar_gz_writes_images_and_contact_sheet(exported, opt_ml):
    path, _ = exported
    model_dir = opt_ml.processing / "input" / "model"
    model_dir.mkdir(parents=True)
    with tarfile.open(model_dir / "model.tar.gz", "w:gz") as tar:  # as SageMaker packs /opt/ml/model
        tar.add(path, arcname="generator.pt")
        tar.add(path, arcname="../evil/generator.pt")  # only ever written to a fixed local path
    out = opt_ml.processing / "output" / "samples"
    assert main(["generate", "--seeds", "0-5", "--truncation", "0.7", "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1, 2, 3, 4, 5]
    pngs = sorted(p.name for p in (out / "seeds").glob("seed*.png"))
    assert pngs == [f"seed{i:04d}.png" for i in range(6)]
    assert Image.open(out / "seeds" / "seed0003.png").size == (16, 16)
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (3 * 130 + 2, 2 * 130 + 2)  # 6 thumbnails of 128 px, 3 columns, 2 px gaps
    assert "seeds/contact_sheet.png" in manifest["files"]
    assert (opt_ml.output / "message").read_text().startswith("generate: 6 seeds")
    # same seed, same image: the generator's noise is constant
    before = (out / "seeds" / "seed0003.png").read_bytes()
    assert main(["generate", "--model", str(path), "--out", str(out), "--seeds", "3", "--truncation", "0.7"]) == 0
    assert (out / "seeds" / "seed0003.png").read_bytes() == before
    assert not (opt_ml.root / "evil").exists() and not (opt_ml.processing / "evil").exists()


def test_projection_recovers_a_generated_image(exported):
    path, meta = exported
    gen = Generator(path)
    w_true = gen.w_avg.reshape(1, -1) + 0.8 * meta["w_std"] * torch.from_numpy(
        np.random.RandomState(3).randn(1, meta["w_dim"]) / np.sqrt(meta["w_dim"])).float()
    with torch.no_grad():
        target = ((gen.synthesize(w_true)[0] + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    w, losses = project(gen, Image.fromarray(target), steps=80)
    assert min(losses) < 0.25 * losses[0]
    assert (w - w_true).norm() < (gen.w_avg.reshape(1, -1) - w_true).norm()


def test_batch_inputs_requests_and_projections(exported, opt_ml):
    path, _ = exported
    inputs = opt_ml.processing / "input" / "requests"
    (inputs / "team-a").mkdir(parents=True)
    (inputs / "team-a" / "posters.json").write_text(json.dumps({"seeds": "10-12", "truncation": 0.5}))
    (inputs / "broken.json").write_text("{not json")
    shutil.copy(ROOT / "include" / "stylegan2" / "request-example.json", inputs / "example.json")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (120, 60, 200)).save(buf, format="JPEG")
    (inputs / "team-a" / "portrait.jpg").write_bytes(buf.getvalue())
    (inputs / "notes.txt").write_text("hello")
    out = opt_ml.processing / "output" / "samples"
    assert main(["generate", "--model", str(path), "--inputs", str(inputs), "--out", str(out), "--steps", "10"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    requests = {r["input"]: r for r in manifest["requests"]}
    assert requests["posters.json"]["seeds"] == [10, 11, 12] and requests["posters.json"]["truncation"] == 0.5
    assert requests["example.json"]["seeds"] == list(range(16))  # the documented example request
    (projection,) = manifest["projections"]
    assert projection["input"] == "portrait.jpg"
    for name in ("target.png", "projected.png", "comparison.png", "w.npy"):
        assert (out / "projections" / projection["output"] / name).is_file()
    assert np.load(out / "projections" / projection["output"] / "w.npy").shape == (1, 16)
    assert sorted(s["input"] for s in manifest["skipped"]) == ["broken.json", "notes.txt"]
    assert (out / "requests" / "posters" / "contact_sheet.png").is_file()


def test_generate_with_nothing_to_do_fails(exported, opt_ml):
    path, _ = exported
    assert main(["generate", "--model", str(path), "--out", str(opt_ml.processing / "o")]) == 2
    assert "nothing to generate" in (opt_ml.output / "failure").read_text()
