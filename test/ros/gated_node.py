"""A node subprocess whose model stage waits at a gate that the test opens (a test aid, not product code).

``python gated_node.py GATE perception-node --ros-args …`` runs the real ``lotus2 perception-node``
(real rclpy, real DDS, the node's own mailbox and worker thread) with one addition around
:meth:`PerceptionPipeline.process`, the model stage the worker runs on each frame it takes:

- the frame's stamp (int ns) is appended to ``GATE.started`` as the frame enters the stage;
- while the file ``GATE`` exists, the frame waits there before the model runs.

So a test can make "the node is busy with frame A" an observed fact (A's stamp in
``GATE.started`` while ``GATE`` exists) instead of a race between its publisher and the speed of
the model on the machine that runs the tests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.005


def install_gate(gate: Path) -> None:
    from lotus2_ros.perception.pipeline import PerceptionPipeline

    process = PerceptionPipeline.process  # fails loudly here if the model stage is renamed
    started = gate.with_name(gate.name + ".started")

    def gated_process(self, frame, *args, **kwargs):
        with open(started, "a") as f:
            f.write(f"{frame.stamp_ns}\n")
        while gate.exists():
            time.sleep(POLL_S)
        return process(self, frame, *args, **kwargs)

    PerceptionPipeline.process = gated_process


def read_started(gate: Path) -> list[int]:
    """Stamps of the frames that entered the model stage, in order."""
    started = gate.with_name(gate.name + ".started")
    return [int(line) for line in started.read_text().split()] if started.exists() else []


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # this checkout's package, as `python -m` from the repo root gets
    install_gate(Path(sys.argv[1]))
    from lotus2_ros.cli.main import main

    sys.exit(main(sys.argv[2:]))
