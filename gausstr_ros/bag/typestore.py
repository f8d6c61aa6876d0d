"""A rosbags typestore that knows ROS 2 Jazzy's messages and this package's own (``msg/*.msg``), and a
converter from message-like objects to rosbags messages.

rosbags (pure Python) serialises and deserialises CDR without ROS; it only needs the message
definitions. The package's definitions are read from the ``.msg`` files (the source tree's ``msg/``
or an installed ``share/gausstr_ros/msg``), so bags carry ``gausstr_ros/msg/SemanticOccupancy``
with exactly the name and type hash (RIHS01) that rosidl generates for ROS.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "gausstr_ros"
SEMANTIC_OCCUPANCY = "gausstr_ros/msg/SemanticOccupancy"
GAUSSIAN_ARRAY = "gausstr_ros/msg/GaussianArray"
INFERENCE_STATUS = "gausstr_ros/msg/InferenceStatus"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
PACKAGE_MESSAGES = ("SemanticOccupancy", "GaussianArray", "InferenceStatus")

# numpy dtypes of the ROS base types that rosbags stores as numpy arrays.
_NUMPY_TYPES = {
    "bool": np.bool_,
    "byte": np.uint8,
    "char": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


def message_directory() -> Path:
    """The directory holding this package's ``.msg`` files.

    Looked up in the source tree (``<repo>/msg``), then in ``share/gausstr_ros/msg`` of this Python
    environment and of every ``AMENT_PREFIX_PATH`` entry (a colcon or rosidl install).

    Raises:
        FileNotFoundError: none of them has the definitions.
    """
    candidates = [Path(__file__).resolve().parents[2] / "msg", Path(sys.prefix) / "share" / PACKAGE / "msg"]
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / PACKAGE / "msg")
    for directory in candidates:
        if all((directory / f"{name}.msg").is_file() for name in PACKAGE_MESSAGES):
            return directory
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} message definitions ({', '.join(PACKAGE_MESSAGES)}.msg); "
        f"looked in: {', '.join(str(c) for c in candidates)}"
    )


def bag_typestore():
    """A new rosbags Typestore: ROS 2 Jazzy's types plus this package's messages.

    A fresh store per bag, because a bag may register its own (possibly different) definitions of
    types the store does not have.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    directory = message_directory()
    types: dict = {}
    for name in PACKAGE_MESSAGES:
        types.update(get_types_from_msg((directory / f"{name}.msg").read_text(), f"{PACKAGE}/msg/{name}"))
    store.register(types)
    return store


def register_definitions(store, connections: Iterable) -> dict[str, str]:
    """Register the message definitions a bag carries for types the store does not know.

    Args:
        store: a rosbags Typestore (changed in place).
        connections: rosbags Connections of a bag.
    Returns:
        {msgtype: reason} for the types that stay unknown (no definition in the bag, or one that
        does not parse).
    """
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    unknown: dict[str, str] = {}
    for conn in connections:
        if conn.msgtype in store.types or conn.msgtype in unknown:
            continue
        definition = getattr(conn, "msgdef", None)
        text = getattr(definition, "data", "") if definition is not None else ""
        if not text:
            unknown[conn.msgtype] = "the bag carries no definition for it and ROS 2 Jazzy has no such type"
            continue
        try:
            if definition.format == MessageDefinitionFormat.IDL:
                types = get_types_from_idl(text)
            else:
                types = get_types_from_msg(text, conn.msgtype)
            store.register(types)
        except Exception as exc:  # rosbags raises several parser errors; each makes the type unknown
            unknown[conn.msgtype] = f"its definition in the bag does not parse ({type(exc).__name__}: {exc})"
            continue
        try:  # every type it refers to must be known too
            store.generate_msgdef(conn.msgtype, ros_version=2)
        except Exception as exc:
            unknown[conn.msgtype] = f"its definition in the bag is incomplete ({type(exc).__name__}: {exc})"
    return unknown


def to_rosbags(obj: Any, msgtype: str, store) -> Any:
    """A rosbags message of type ``msgtype`` with the field values of any message-like object.

    ``obj`` may be an rclpy message, a rosbags message or a ``types.SimpleNamespace`` with the same
    fields (e.g. ``gausstr_ros.rig_messages.RigMessages(like=True)``); arrays may be numpy arrays,
    ``array.array``, bytes or lists. Fields the object lacks take ROS's default value (0, False, "",
    empty sequences, zero-filled fixed arrays, default sub-messages), as in a freshly built message;
    ``obj=None`` gives the default message.

    Raises:
        ValueError: a value has the wrong length for a fixed-size array, or the type is unknown.
    """
    from rosbags.typesys.store import Nodetype

    if msgtype not in store.fielddefs:
        raise ValueError(f"unknown message type {msgtype!r}")
    _, fields = store.fielddefs[msgtype]
    values = {}
    for name, (kind, detail) in fields:
        value = getattr(obj, name, None)
        if value is None:
            value = _default(kind, detail)
        if kind == Nodetype.NAME:
            values[name] = to_rosbags(value, detail, store)
        elif kind == Nodetype.BASE:
            values[name] = _base_value(value, detail[0])
        else:
            (sub_kind, sub_detail), size = detail
            if sub_kind == Nodetype.NAME:
                values[name] = [to_rosbags(v, sub_detail, store) for v in value]
            elif sub_detail[0] in _NUMPY_TYPES:
                array = _numpy_array(value, _NUMPY_TYPES[sub_detail[0]])
                values[name] = array
            else:
                values[name] = [_base_value(v, sub_detail[0]) for v in value]
            if kind == Nodetype.ARRAY and len(values[name]) != size:
                raise ValueError(f"{msgtype}.{name} must have {size} values, got {len(values[name])}")
    return store.types[msgtype](**values)


def _default(kind, detail) -> Any:
    """ROS's default value of a field (None for a sub-message: built from defaults by the caller)."""
    from rosbags.typesys.store import Nodetype

    if kind == Nodetype.NAME:
        return None
    if kind == Nodetype.BASE:
        return "" if detail[0] in ("string", "wstring") else 0
    (sub_kind, _), size = detail
    return (
        [None] * size
        if kind == Nodetype.ARRAY and sub_kind == Nodetype.NAME
        else ([0] * size if kind == Nodetype.ARRAY else [])
    )


def _numpy_array(value: Any, dtype) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value.reshape(-1)).astype(dtype, copy=False)
    if hasattr(value, "typecode"):  # array.array
        return np.frombuffer(value, dtype=np.dtype(value.typecode)).astype(dtype, copy=True)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, dtype=np.uint8).astype(dtype, copy=True)
    return np.asarray(list(value), dtype=dtype)


def _base_value(value: Any, ros_type: str) -> Any:
    if ros_type in ("string", "wstring"):
        return str(value)
    if ros_type in ("float32", "float64"):
        return float(value)
    if ros_type == "bool":
        return bool(value)
    return int(value)
