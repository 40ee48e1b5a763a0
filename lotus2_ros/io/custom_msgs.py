"""This package's own message definitions (``msg/*.msg``) for tools without a ROS build.

The ROS build generates ``lotus2_ros.msg`` with rosidl. The bag tool and other ROS-free code
register the same definitions with a rosbags typestore instead, read from the ``.msg`` files:
the source tree's ``msg/`` folder, the ``share/lotus2_ros/msg`` folder a pip install puts in its
prefix, or the package's share folder in a sourced ROS workspace.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "lotus2_ros"
#: Messages of this package: name → ``.msg`` file name.
MESSAGES = {"ScaleFit": "ScaleFit.msg"}


def msg_dir() -> Path:
    """The folder holding this package's ``.msg`` files.

    Raises:
        FileNotFoundError: None of the places above has them.
    """
    candidates = [Path(__file__).resolve().parents[2] / "msg", Path(sys.prefix) / "share" / PACKAGE / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE / "msg")
    for folder in candidates:
        if all((folder / f).is_file() for f in MESSAGES.values()):
            return folder
    raise FileNotFoundError(f"cannot find the {PACKAGE} .msg files; looked in {[str(c) for c in candidates]}")


def register_custom_msgs(typestore) -> dict[str, str]:
    """Register ``lotus2_ros/msg/*`` with a rosbags typestore; returns ``{type name: definition}``."""
    from rosbags.typesys import get_types_from_msg

    folder = msg_dir()
    definitions = {}
    types = {}
    for name, file in MESSAGES.items():
        text = (folder / file).read_text(encoding="utf-8")
        full = f"{PACKAGE}/msg/{name}"
        definitions[full] = text
        types.update(get_types_from_msg(text, full))
    typestore.register(types)
    return definitions
