"""SageMaker-style single-image inference functions."""

from __future__ import annotations

import io
import subprocess

import numpy as np

from reelforge_sr import serving
from reelforge_sr.quality import psnr


def test_model_input_predict_output_round_trip(model_dir, video_dir, monkeypatch):
    monkeypatch.setenv("SR_MODEL", "realesr-animevideov3")
    monkeypatch.setenv("SR_SCALE", "2")
    model = serving.model_fn(str(model_dir))
    png = subprocess.run(["ffmpeg", "-v", "error", "-ss", "3", "-i", str(video_dir / "caminandes_clip_02.mp4"),
                          "-frames:v", "1", "-vf", "scale=64:36:flags=area", "-c:v", "png", "-f", "image2pipe", "-"],
                         capture_output=True, check=True).stdout
    image = serving.input_fn(png, "image/png")
    assert image.shape == (36, 64, 3) and image.dtype == np.uint8
    assert np.array_equal(serving.input_fn(serving.encode_png(image), "image/png"), image)  # lossless PNG path
    out = serving.predict_fn(image, model)
    assert out.shape == (72, 128, 3) and out.dtype == np.uint8
    assert np.array_equal(serving.input_fn(serving.output_fn(out, "image/png"), "image/png"), out)
    assert np.array_equal(np.load(io.BytesIO(serving.output_fn(out, "application/x-npy"))), out)
    npy = io.BytesIO()
    np.save(npy, image)
    assert np.array_equal(serving.input_fn(npy.getvalue(), "application/x-npy"), image)
    # the upscale, averaged back down to the input size, is close to the input
    small = out.reshape(36, 2, 64, 2, 3).mean(axis=(1, 3))
    assert psnr(small, image) > 25
