"""The perception pipeline (ROS-free): configuration, one frame → products, stepwise refinement."""

from lotus2_ros.perception.config import ConfigError, PerceptionConfig
from lotus2_ros.perception.pipeline import Frame, PerceptionOutput, PerceptionPipeline, Refinement

__all__ = ["ConfigError", "Frame", "PerceptionConfig", "PerceptionOutput", "PerceptionPipeline", "Refinement"]
