"""sensor_msgs/CompressedImage -> numpy, with image_transport's conventions (OpenCV decodes).

Colour (image_transport "compressed", compressed_image_transport): ``format`` is
``"<encoding>; <jpeg|png> compressed <bgr8|rgb8|mono8|...>"`` (older publishers and other tools write
just ``"jpeg"`` / ``"png"``). The data is a JPEG or PNG file. Like compressed_image_transport's
subscriber, the decoded pixels are taken as BGR unless the format says the compressed image was
``rgb``, and the result here is always RGB.

Depth (image_transport "compressedDepth", compressed_depth_image_transport): ``format`` is
``"<16UC1|32FC1>; compressedDepth png"``; the data is a 12-byte header (int32 format, two float32
quantization parameters) followed by a 16-bit PNG: millimetres for 16UC1, quantized inverse depth
for 32FC1 (depth = a / (q + b), q = 0: no measurement). A plain ``"compressed"`` 16-bit PNG (mono16 /
16UC1) is read as millimetres.

Decoding costs milliseconds per image (a 1600x900 JPEG: ~7 ms), so the node decodes in its
inference thread (``FramePipeline``), never in a subscription callback.
"""

from __future__ import annotations

import struct

import numpy as np

from gausstr_ros.conversions import ConversionError
from gausstr_ros.conversions.buffers import message_bytes

# compressed_depth_image_transport's ConfigHeader: int32 format (INV_DEPTH = 0), float32 depthParam[2].
COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")
COLOR_FORMATS = ("jpeg", "jpg", "png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_compressed(msg) -> bool:
    """Whether ``msg`` is a CompressedImage(-like): a ``format`` field and no ``encoding``."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - OpenCV is a dependency (python3-opencv)
        raise ConversionError(
            f"decoding CompressedImage needs OpenCV (rosdep key python3-opencv, pip opencv-python): {exc}"
        ) from exc
    return cv2


def _split_format(fmt: str) -> tuple[str, str]:
    """(original encoding or "", the compression part) of an image_transport format string."""
    fmt = str(fmt).strip()
    if ";" in fmt:
        encoding, rest = fmt.split(";", 1)
        return encoding.strip(), rest.strip().lower()
    return "", fmt.lower()


def _decode(data: np.ndarray, what: str) -> np.ndarray:
    cv2 = _cv2()
    if data.size == 0:
        raise ConversionError(f"{what}: CompressedImage has no data")
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ConversionError(f"{what}: the data ({data.size} bytes) does not decode as JPEG or PNG")
    return pixels


def compressed_to_rgb(msg) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a colour CompressedImage (JPEG or PNG).

    Raises:
        ConversionError: an unknown format, data that does not decode, or a 16-bit colour image.
    """
    _, compression = _split_format(msg.format)
    if "compresseddepth" in compression:
        raise ConversionError(
            f"CompressedImage format {msg.format!r} is a compressedDepth (depth) image, not a colour image"
        )
    if compression and not any(f in compression for f in COLOR_FORMATS):
        raise ConversionError(
            f"CompressedImage format {msg.format!r} is not supported; expected jpeg or png "
            f"(image_transport 'compressed')"
        )
    pixels = _decode(message_bytes(msg.data), f"CompressedImage ({msg.format})")
    if pixels.dtype != np.uint8:
        raise ConversionError(
            f"CompressedImage ({msg.format}) decodes to {pixels.dtype} pixels; colour images must be 8-bit"
        )
    if pixels.ndim == 2:
        return np.broadcast_to(pixels[..., None], (*pixels.shape, 3))
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ConversionError(f"CompressedImage ({msg.format}) decodes to an unexpected shape {pixels.shape}")
    # OpenCV decodes into BGR(A) order. compressed_image_transport writes "compressed rgb8" only when
    # the stored channels are RGB (the subscriber then does not swap them); anything else is BGR.
    stored_rgb = "compressed rgb" in compression
    return pixels[..., :3] if stored_rgb else pixels[..., 2::-1]


def compressed_to_depth_metres(msg) -> np.ndarray:
    """(H, W) float32 depth [m] of a compressedDepth (16UC1 / 32FC1) or 16-bit PNG CompressedImage.

    The layout is recognised by the PNG signature: at the start (a plain 16-bit PNG, millimetres) or
    after the 12-byte compressedDepth header. Unmeasured pixels come out as 0 (16UC1) or NaN (32FC1),
    as the depth camera sent them; the pipeline turns them into the far depth (gausstr_core.data.depth).

    Raises:
        ConversionError: RVL or another codec, data that does not decode, or not 16-bit mono.
    """
    encoding, compression = _split_format(msg.format)
    data = message_bytes(msg.data)
    what = f"depth CompressedImage ({msg.format})"
    header = COMPRESSED_DEPTH_HEADER.size
    if "rvl" in compression:
        raise ConversionError(f"{what}: the RVL codec is not supported; publish compressedDepth png")
    if data[:8].tobytes() == PNG_SIGNATURE:
        pixels = _decode(data, what)
        quant = None
    elif data[header : header + 8].tobytes() == PNG_SIGNATURE:
        _, quant_a, quant_b = COMPRESSED_DEPTH_HEADER.unpack(data[:header].tobytes())
        pixels = _decode(data[header:], what)
        quant = (quant_a, quant_b)
    else:
        raise ConversionError(
            f"{what}: the data is neither a PNG nor a compressedDepth PNG (image_transport "
            f"'compressedDepth' png, or 'compressed' png of a 16UC1 / mono16 image)"
        )
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ConversionError(f"{what}: decodes to {pixels.dtype} {pixels.shape}; depth must be 16-bit mono")
    if encoding.upper() == "32FC1":
        if quant is None:
            raise ConversionError(f"{what}: a 32FC1 depth image needs the compressedDepth header")
        # compressed_depth_image_transport: q = a / depth + b, q = 0 where nothing was measured.
        q = pixels.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.float32(quant[0]) / (q - np.float32(quant[1]))
        return np.where(pixels > 0, depth, np.float32(np.nan)).astype(np.float32, copy=False)
    if encoding and encoding.upper() not in ("16UC1", "MONO16"):
        raise ConversionError(f"{what}: depth encoding {encoding!r} is not supported (16UC1, mono16, 32FC1)")
    return pixels.astype(np.float32) * np.float32(0.001)


def encode_compressed(
    rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95, png_level: int = 3
) -> tuple[str, bytes]:
    """(format string, data) of a CompressedImage holding ``rgb``, as compressed_image_transport writes it
    (defaults: JPEG quality 95, PNG level 3; the pixels are stored BGR, "rgb8; jpeg compressed bgr8").

    Args:
        rgb: (H, W, 3) uint8 RGB or (H, W) uint8 mono.
        fmt: "jpeg" or "png".
    """
    cv2 = _cv2()
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format must be jpeg or png, got {fmt!r}")
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ValueError(f"expected (H, W[, 3]) uint8 pixels, got {rgb.dtype} {rgb.shape}")
    mono = rgb.ndim == 2
    pixels = rgb if mono else np.ascontiguousarray(rgb[..., ::-1])
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        if fmt == "jpeg"
        else [cv2.IMWRITE_PNG_COMPRESSION, png_level]
    )
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", pixels, params)
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    stored = "mono8" if mono else "bgr8"
    return f"{'mono8' if mono else 'rgb8'}; {fmt} compressed {stored}", buf.tobytes()


def encode_compressed_depth(
    depth_m: np.ndarray, encoding: str = "16UC1", depth_max: float = 10.0, depth_quantization: float = 100.0
) -> tuple[str, bytes]:
    """(format, data) of a compressedDepth CompressedImage of metric depth, as
    compressed_depth_image_transport publishes it: 16UC1 = millimetres in a 16-bit PNG (beyond 65.535 m:
    0, unmeasured); 32FC1 =
    quantized inverse depth (its ``depth_max`` and ``depth_quantization`` parameters, defaults 10 m and
    100). 0 / NaN / inf (and, for 32FC1, depth >= depth_max) = unmeasured."""
    cv2 = _cv2()
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if encoding == "16UC1":
        # Beyond 65.535 m a millimetre image cannot hold the depth: unmeasured (0), like the transport's
        # depth_max filter, so that the pipeline sees the far depth there rather than a wrong 65.5 m.
        mm = np.where(valid, np.round(depth_m * 1000.0), 0)
        pixels = np.where(mm <= 65535, mm, 0).astype(np.uint16)
        header = COMPRESSED_DEPTH_HEADER.pack(0, 0.0, 0.0)
    elif encoding == "32FC1":
        quant_a = np.float32(depth_quantization * (depth_quantization + 1.0))
        quant_b = np.float32(1.0 - quant_a / depth_max)
        valid &= depth_m < depth_max
        with np.errstate(divide="ignore", invalid="ignore"):
            q = quant_a / depth_m.astype(np.float32) + quant_b
        pixels = np.where(valid, q, 0).astype(np.uint16)  # C++ float -> unsigned short truncates
        header = COMPRESSED_DEPTH_HEADER.pack(0, float(quant_a), float(quant_b))
    else:
        raise ValueError(f"encoding must be 16UC1 or 32FC1, got {encoding!r}")
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ConversionError("OpenCV could not encode the depth image as PNG")
    return f"{encoding}; compressedDepth png", header + buf.tobytes()
