"""Colour rgba8/bgra8, depth mono16, and sensor_msgs/CompressedImage (JPEG/PNG colour, compressedDepth and
16-bit PNG depth) with real encoded bytes from two encoders (OpenCV and Pillow), through the conversions
and the node's FramePipeline (no rclpy)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from gausstr_core.data.depth import FAR_DEPTH
from gausstr_ros.conversions import ConversionError
from gausstr_ros.conversions.compressed import (
    COMPRESSED_DEPTH_HEADER,
    compressed_to_depth_metres,
    compressed_to_rgb,
    encode_compressed,
    encode_compressed_depth,
    is_compressed,
)
from gausstr_ros.conversions.images import depth_image_to_metres, image_to_rgb
from gausstr_ros.pipeline import CameraFrame, FramePipeline, FrameRejected
from gausstr_testing.ros_frames import SyntheticCameras
from gausstr_testing.ros_message_like import camera_info_like, image_like

cv2 = pytest.importorskip("cv2", reason="OpenCV decodes CompressedImage")


def compressed_like(fmt: str, data: bytes, stamp_ns: int = 0):
    """A CompressedImage-like namespace (no ``encoding`` field, like rosbags' and rclpy's)."""
    header = SimpleNamespace(
        stamp=SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="c"
    )
    return SimpleNamespace(header=header, format=fmt, data=np.frombuffer(data, np.uint8))


def pillow_bytes(rgb: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(rgb).save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def photo(h: int = 90, w: int = 160) -> np.ndarray:
    return SyntheticCameras(height=h, width=w).rgb(0, 3)


def test_rgba8_and_bgra8_drop_alpha_without_copying():
    rgb = photo()
    alpha = np.full((*rgb.shape[:2], 1), 7, np.uint8)
    for encoding, pixels in (
        ("rgba8", np.concatenate([rgb, alpha], -1)),
        ("bgra8", np.concatenate([rgb[..., ::-1], alpha], -1)),
    ):
        msg = image_like(pixels, encoding, pad=8)
        out = image_to_rgb(msg)
        np.testing.assert_array_equal(out, rgb)
        assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8)), f"{encoding} was copied"


def test_mono16_depth_is_millimetres():
    mm = np.array([[0, 1, 1500], [65535, 20, 7]], np.uint16)
    np.testing.assert_allclose(depth_image_to_metres(image_like(mm, "mono16")), mm.astype(np.float32) / 1000)


@pytest.mark.parametrize("encoder", ["opencv", "pillow"])
def test_jpeg_decodes_like_pillow_within_jpeg_loss(encoder):
    rgb = photo()
    if encoder == "opencv":
        fmt, data = encode_compressed(rgb, "jpeg", quality=95)
        assert fmt == "rgb8; jpeg compressed bgr8"  # compressed_image_transport's format string
    else:
        fmt, data = "jpeg", pillow_bytes(rgb, "JPEG")
    msg = compressed_like(fmt, data)
    assert is_compressed(msg)
    out = image_to_rgb(msg)
    # The same bytes decoded by Pillow: identical pixels (both use libjpeg's default IDCT).
    np.testing.assert_array_equal(out, np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB")))
    # JPEG loss at quality 95 on this image (smooth colours plus per-pixel noise of std 7.6 levels,
    # which JPEG partly removes): mean 4.5 levels.
    err = np.abs(out.astype(np.int16) - rgb.astype(np.int16))
    assert err.mean() < 6.0 and out.shape == rgb.shape, err.mean()


@pytest.mark.parametrize("encoder", ["opencv", "pillow"])
def test_png_is_lossless(encoder):
    rgb = photo()
    fmt, data = encode_compressed(rgb, "png") if encoder == "opencv" else ("png", pillow_bytes(rgb, "PNG"))
    np.testing.assert_array_equal(compressed_to_rgb(compressed_like(fmt, data)), rgb)


def test_channel_order_follows_the_format_like_image_transport():
    """'compressed bgr8' (and no order at all) = OpenCV's BGR; 'compressed rgb8' = the stored channels
    are RGB, so compressed_image_transport's subscriber does not swap them."""
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 220  # red
    ok, stored_rgb = cv2.imencode(".png", rgb)  # RGB bytes written as if they were BGR
    assert ok
    out = compressed_to_rgb(compressed_like("rgb8; png compressed rgb8", stored_rgb.tobytes()))
    np.testing.assert_array_equal(out, rgb)
    fmt, data = encode_compressed(rgb, "png")
    np.testing.assert_array_equal(compressed_to_rgb(compressed_like(fmt, data)), rgb)
    np.testing.assert_array_equal(compressed_to_rgb(compressed_like("png", data)), rgb)


def test_mono_jpeg_and_png_with_alpha():
    grey = photo()[..., 1].copy()
    fmt, data = encode_compressed(grey, "png")
    assert fmt.startswith("mono8;")
    out = compressed_to_rgb(compressed_like(fmt, data))
    assert out.shape == (*grey.shape, 3) and (out == grey[..., None]).all()
    rgba = np.concatenate([photo(), np.full((90, 160, 1), 9, np.uint8)], -1)
    np.testing.assert_array_equal(
        compressed_to_rgb(compressed_like("png", pillow_bytes(rgba, "PNG"))), rgba[..., :3]
    )


def test_compressed_depth_16uc1_is_exact_and_32fc1_within_its_quantization():
    depth = SyntheticCameras(height=48, width=80).depth(0).copy()
    depth[:3] = 0.0
    depth[3, :4] = np.nan
    fmt, data = encode_compressed_depth(depth, "16UC1")
    got = depth_image_to_metres(compressed_like(fmt, data))
    want = np.where(np.isfinite(depth), np.round(depth * 1000) / 1000, 0).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=1e-6)

    fmt, data = encode_compressed_depth(depth, "32FC1", depth_max=50.0)
    got = depth_image_to_metres(compressed_like(fmt, data))
    valid = np.isfinite(depth) & (depth > 0) & (depth < 50.0)
    assert np.isnan(got[~valid]).all()
    # Inverse-depth quantization (depth_quantization 100): relative error ~ depth / 100^2 per step.
    rel = np.abs(got[valid] - depth[valid]) / depth[valid]
    assert rel.max() < 0.005, rel.max()


def test_a_plain_16bit_png_is_millimetre_depth():
    mm = (np.arange(48 * 80).reshape(48, 80) % 5000).astype(np.uint16)
    _, png = cv2.imencode(".png", mm)
    got = compressed_to_depth_metres(compressed_like("16UC1; png compressed mono16", png.tobytes()))
    np.testing.assert_allclose(got, mm / np.float32(1000), atol=1e-6)


@pytest.mark.parametrize(
    ("fmt", "data", "text"),
    [
        ("jpeg", b"", "has no data"),
        ("jpeg", b"\xff\xd8 not a jpeg at all", "does not decode"),
        ("rgb8; theora compressed bgr8", b"xyz", "not supported"),
        ("16UC1; compressedDepth png", b"xyz", None),
    ],
)
def test_bad_compressed_colour_data_is_refused_with_its_reason(fmt, data, text):
    with pytest.raises(ConversionError, match=text or "compressedDepth"):
        compressed_to_rgb(compressed_like(fmt, data))


def test_bad_compressed_depth_is_refused_with_its_reason():
    with pytest.raises(ConversionError, match="RVL"):
        compressed_to_depth_metres(compressed_like("16UC1; compressedDepth rvl", b"\0" * 40))
    with pytest.raises(ConversionError, match="neither a PNG"):
        compressed_to_depth_metres(compressed_like("16UC1; compressedDepth png", b"\0" * 40))
    _, data = encode_compressed(photo(), "png")  # 8-bit colour is not depth
    with pytest.raises(ConversionError, match="16-bit mono"):
        compressed_to_depth_metres(compressed_like("16UC1; png", data))
    header = COMPRESSED_DEPTH_HEADER.pack(0, 0.0, 0.0)
    _, png16 = cv2.imencode(".png", np.ones((4, 4), np.uint16))
    with pytest.raises(ConversionError, match="not supported"):
        compressed_to_depth_metres(compressed_like("8UC1; compressedDepth png", header + png16.tobytes()))
    with pytest.raises(ConversionError, match="8-bit"):
        compressed_to_rgb(compressed_like("png", png16.tobytes()))


class RecordingPredictor:
    input_size = (48, 80)
    device = torch.device("cpu")
    class_names = ("a",)
    free_label = 1

    def set_categories(self, categories):
        pass

    def predict(self, batch, render_depth=None):
        raise RuntimeError("not used")


def camera_frames(cams: SyntheticCameras, compressed: str | None, depth_transport: str | None = None):
    frames = []
    for k in range(len(cams.names)):
        spec = cams.rig.cameras[k]
        info = camera_info_like(
            k=(spec.fx, 0, spec.cx, 0, spec.fy, spec.cy, 0, 0, 1), width=cams.width, height=cams.height
        )
        rgb = cams.rgb(k, 0)
        image = (
            image_like(rgb, "rgb8")
            if compressed is None
            else compressed_like(*encode_compressed(rgb, compressed))
        )
        depth = cams.depth(k).copy()
        depth[:2] = 0.0  # unmeasured rows
        if depth_transport is None:
            depth_msg = image_like(np.round(depth * 1000).astype(np.uint16), "16UC1")
        else:
            depth_msg = compressed_like(*encode_compressed_depth(depth, "16UC1"))
        frames.append(CameraFrame(cams.names[k], image, info, depth_msg, cams.cam_to_target(k)))
    return frames


@pytest.mark.parametrize("compression", ["png", "jpeg"])
def test_the_pipeline_sees_compressed_cameras_like_raw_ones(compression):
    """Compressed images and compressedDepth reach the model as the raw messages do: identically for
    PNG and compressedDepth, within JPEG's loss for JPEG; unmeasured depth becomes the far depth."""
    cams = SyntheticCameras(height=96, width=160)
    pipeline = FramePipeline(RecordingPredictor())
    raw = pipeline.prepare(camera_frames(cams, None))
    packed = pipeline.prepare(camera_frames(cams, compression, depth_transport="compressedDepth"))
    torch.testing.assert_close(packed.depth, raw.depth)
    assert (packed.depth[0, :, 0] == FAR_DEPTH).all()
    torch.testing.assert_close(packed.intrinsics, raw.intrinsics)
    if compression == "png":
        torch.testing.assert_close(packed.images, raw.images)
    else:
        err = (packed.images - raw.images).abs()
        assert err.mean() < 6.0 / 255 and err.max() < 0.25, (err.mean(), err.max())


def test_a_corrupt_compressed_camera_rejects_the_set_naming_the_camera():
    cams = SyntheticCameras(height=48, width=80)
    frames = camera_frames(cams, "jpeg")
    frames[2].image.data = frames[2].image.data[: len(frames[2].image.data) // 3]  # truncated JPEG
    with pytest.raises(FrameRejected, match=f"camera {cams.names[2]}") as info:
        FramePipeline(RecordingPredictor()).prepare(frames)
    assert info.value.kind == "encoding"
