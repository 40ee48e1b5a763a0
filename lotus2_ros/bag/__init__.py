"""Offline bag processing (ROS-free): the live node's pipeline over recorded ROS 2 bags.

Reads sqlite3 and mcap bags with ``rosbags``; never imports rclpy. Typical use::

    from lotus2_ros.bag import ProcessBagOptions, process_bag
    stats = process_bag(ProcessBagOptions("run1", "run1_lotus2", config), engine)
    print(stats.summary())

The command line is ``lotus2 process-bag`` / ``ros2 run lotus2_ros process_bag``, and
``lotus2 process-bags`` for many bags over several processes (docs/BAGS.md).
"""

from lotus2_ros.bag.config_file import load_perception_config
from lotus2_ros.bag.errors import (
    BagError,
    BagReadError,
    BagTopicError,
    Interrupted,
    OutputExistsError,
    ResumeError,
)
from lotus2_ros.bag.index import BagIndex, StampIndex, index_bag
from lotus2_ros.bag.journal import PARTIAL_SUFFIX, Checkpoint, PartialRun, partial_path
from lotus2_ros.bag.processor import (
    DEFAULT_OUTPUT_PREFIX,
    BagPlan,
    ProcessBagOptions,
    plan_bag_run,
    process_bag,
    run_bag,
)
from lotus2_ros.bag.reader import BagTopics, InputBag, cdr_header_stamp_ns
from lotus2_ros.bag.shard import Shard, assign_bags, device_for, shard_from_env
from lotus2_ros.bag.stats import RunStats, is_forward
from lotus2_ros.bag.tf import TfTree, extrinsic_lookup
from lotus2_ros.bag.selection import ALL_OUTPUTS, DEFAULT_SELECTION, OutputSelection
from lotus2_ros.bag.writer import BagCompression, OutputBag, merge_bags

__all__ = [
    "ALL_OUTPUTS",
    "DEFAULT_OUTPUT_PREFIX",
    "DEFAULT_SELECTION",
    "PARTIAL_SUFFIX",
    "BagCompression",
    "BagError",
    "BagIndex",
    "BagPlan",
    "BagReadError",
    "BagTopicError",
    "BagTopics",
    "Checkpoint",
    "InputBag",
    "Interrupted",
    "OutputBag",
    "OutputExistsError",
    "OutputSelection",
    "PartialRun",
    "ProcessBagOptions",
    "ResumeError",
    "RunStats",
    "Shard",
    "StampIndex",
    "TfTree",
    "assign_bags",
    "cdr_header_stamp_ns",
    "device_for",
    "extrinsic_lookup",
    "index_bag",
    "is_forward",
    "load_perception_config",
    "merge_bags",
    "partial_path",
    "plan_bag_run",
    "process_bag",
    "run_bag",
    "shard_from_env",
]
