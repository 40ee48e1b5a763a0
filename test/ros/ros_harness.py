"""Helpers for the real-DDS node tests: node subprocesses and spinning until a condition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """A ``lotus2 <node>`` subprocess with its output captured to a file."""

    def __init__(self, subcommand: str, params: dict, namespace: str, log_path: Path, remaps: dict | None = None):
        args = [sys.executable, "-m", "lotus2_ros.cli.main", subcommand, "--ros-args", "-r", f"__ns:={namespace}"]
        for k, v in params.items():
            args += ["-p", f"{k}:={_param(v)}"]
        for k, v in (remaps or {}).items():
            args += ["-r", f"{k}:={v}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGINT, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def _param(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def spin_until(node, predicate, timeout_s: float) -> bool:
    """Spin ``node`` until ``predicate()`` is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        node.executor_.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return False
