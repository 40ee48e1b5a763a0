"""The RViz configuration for one launch: the package's ``config/lotus2.rviz`` with this launch's names.

``config/lotus2.rviz`` is written for the launch defaults (namespace ``lotus2``, node
``lotus2_perception``, input ``image``, fixed frame ``camera_optical_frame``). A launch with another
namespace, a remapped image topic or another camera frame gets a copy whose display topics and
fixed frame are this launch's, so RViz shows what the node really publishes. Needs only PyYAML.
"""

from __future__ import annotations

import yaml

#: The names ``config/lotus2.rviz`` is written for.
TEMPLATE_NAMESPACE = "/lotus2"
TEMPLATE_NODE = "lotus2_perception"
TEMPLATE_IMAGE = "/lotus2/image"


def resolve_topic(namespace: str, name: str) -> str:
    """The absolute name of topic ``name`` (relative or absolute) in ``namespace``."""
    if name.startswith("/"):
        return name
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{name}"


def rviz_config(template_text: str, *, namespace: str, image_topic: str, fixed_frame: str,
                node_name: str = TEMPLATE_NODE) -> str:
    """The RViz configuration ``template_text`` rewritten for a launch.

    Args:
        template_text: ``config/lotus2.rviz``.
        namespace: The node's namespace (``lotus2`` or ``/lotus2``; empty for none).
        image_topic: The camera image topic as remapped (relative names resolve in ``namespace``).
        fixed_frame: RViz's fixed frame: the camera's optical frame (its images' ``frame_id``).
        node_name: The node's name.

    Returns:
        The YAML text of the rewritten configuration.
    """
    config = yaml.safe_load(template_text)
    manager = config["Visualization Manager"]
    outputs = resolve_topic(namespace, node_name)
    template_outputs = f"{TEMPLATE_NAMESPACE}/{TEMPLATE_NODE}"
    for display in manager.get("Displays", []):
        topic = display.get("Topic")
        if not isinstance(topic, dict) or "Value" not in topic:
            continue
        value = str(topic["Value"])
        if value == TEMPLATE_IMAGE:
            topic["Value"] = resolve_topic(namespace, image_topic)
        elif value.startswith(template_outputs + "/"):
            topic["Value"] = outputs + value[len(template_outputs):]
    manager.setdefault("Global Options", {})["Fixed Frame"] = fixed_frame
    return yaml.safe_dump(config, sort_keys=False)
