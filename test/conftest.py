"""Shared fixtures: a tiny random model in the official layout, built once per test session."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub from the tests

import pytest


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test leaves torch's thread count as it found it (a benchmark's ``--torch-threads 1`` run
    in-process, a node's ``torch_threads`` parameter): float results that depend on the reduction
    order must not depend on which tests ran before."""
    torch = sys.modules.get("torch")  # not imported here: some tests check what a module imports
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``TinyModel(base_model, weights)`` folders written by ``make_tiny_model`` (seed 0)."""
    from lotus2_ros.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    """A fp32 CPU engine with both tasks and both sharpeners loaded."""
    from lotus2_ros.model.backend import BackendConfig
    from lotus2_ros.model.engine import Lotus2Engine

    return Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=tiny_model.weights,
                                           tasks=("depth", "normal")))


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_engine):
    """The single-image pipeline (``lotus2 predict``'s) around ``tiny_engine`` (depth + normal, sharpener)."""
    from lotus2_ros.perception.pipeline import offline_pipeline

    return offline_pipeline(tiny_engine)


@pytest.fixture(scope="session")
def tiny_lotus1(tmp_path_factory):
    """``TinyLotus1``: Lotus-G depth (disparity release) + normal folders, seed 0."""
    from lotus2_ros.model.tiny_lotus1 import make_tiny_lotus1

    return make_tiny_lotus1(tmp_path_factory.mktemp("tiny_lotus1") / "g", mode="g", seed=0)


@pytest.fixture(scope="session")
def tiny_lotus1_d(tmp_path_factory):
    """``TinyLotus1``: Lotus-D depth (a depth-output release, like v1-0) + normal folders, seed 1."""
    from lotus2_ros.model.tiny_lotus1 import make_tiny_lotus1

    return make_tiny_lotus1(tmp_path_factory.mktemp("tiny_lotus1") / "d", mode="d", seed=1, depth_output="depth")
