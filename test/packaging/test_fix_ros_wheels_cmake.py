"""scripts/fix_ros_wheels_cmake.py rewrites stale include paths, and only those, idempotently."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LOCAL = {"python": "/here/include/python3.11",
         "numpy": "/here/venv/lib/python3.11/site-packages/numpy/_core/include"}
STALE_EXPORT = """\
set_target_properties(std_msgs::std_msgs__rosidl_generator_py PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;\
/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"
)
# a comment naming /opt/python/cp311-cp311/include/python3.11 stays as it is
set(_IMPORT_CHECK_FILES "${_IMPORT_PREFIX}/lib/libstd_msgs__rosidl_generator_py.so")
"""


@pytest.fixture(scope="module")
def fixer():
    spec = importlib.util.spec_from_file_location(
        "fix_ros_wheels_cmake", REPO / "scripts" / "fix_ros_wheels_cmake.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stale_python_and_numpy_includes_are_replaced_by_local_ones(fixer):
    text, changes = fixer.fix_text(STALE_EXPORT, LOCAL)
    assert f'INTERFACE_INCLUDE_DIRECTORIES "{LOCAL["python"]};{LOCAL["numpy"]}"' in text
    assert sorted(new for _, new in changes) == sorted(LOCAL.values())


def test_lines_other_than_include_directories_are_untouched(fixer):
    text, _ = fixer.fix_text(STALE_EXPORT, LOCAL)
    old_lines = STALE_EXPORT.splitlines()
    new_lines = text.splitlines()
    assert len(new_lines) == len(old_lines)
    assert [a for a, b in zip(old_lines, new_lines) if a != b] == [old_lines[1]]


def test_a_second_pass_changes_nothing(fixer):
    once, _ = fixer.fix_text(STALE_EXPORT, LOCAL)
    twice, changes = fixer.fix_text(once, LOCAL)
    assert twice == once and changes == []


def test_numpy_1_layout_is_recognised_too(fixer):
    line = '  INTERFACE_INCLUDE_DIRECTORIES "/b/site-packages/numpy/core/include"\n'
    text, _ = fixer.fix_text(line, LOCAL)
    assert text == f'  INTERFACE_INCLUDE_DIRECTORIES "{LOCAL["numpy"]}"\n'


def test_fix_prefix_checks_then_rewrites_files_under_share(fixer, tmp_path, monkeypatch):
    monkeypatch.setattr(fixer, "local_include_dirs", lambda: dict(LOCAL))
    export = tmp_path / "share" / "std_msgs" / "cmake" / "export_std_msgs__pyExport.cmake"
    export.parent.mkdir(parents=True)
    export.write_text(STALE_EXPORT, encoding="utf-8")

    assert fixer.fix_prefix(tmp_path, check=True) == 1
    assert export.read_text(encoding="utf-8") == STALE_EXPORT  # --check writes nothing
    assert fixer.fix_prefix(tmp_path) == 1
    assert LOCAL["numpy"] in export.read_text(encoding="utf-8")
    assert fixer.fix_prefix(tmp_path, check=True) == 0


def test_prefix_setup_files_chain_the_venv_into_ament_paths(fixer, tmp_path):
    (tmp_path / "share").mkdir()
    assert fixer.main(["--prefix", str(tmp_path), "--check"]) == 1
    assert not (tmp_path / "local_setup.sh").exists()
    assert fixer.main(["--prefix", str(tmp_path)]) == 0
    assert fixer.main(["--prefix", str(tmp_path), "--check"]) == 0

    script = f'''
        export AMENT_PREFIX_PATH=/opt/other CMAKE_PREFIX_PATH= PATH=/usr/bin:/bin
        . "{tmp_path}/local_setup.bash"; . "{tmp_path}/local_setup.bash"
        echo "$AMENT_PREFIX_PATH|$CMAKE_PREFIX_PATH|$PATH"
    '''
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    prefix = str(tmp_path.resolve())
    assert out.stdout.strip() == f"{prefix}:/opt/other|{prefix}|{prefix}/bin:/usr/bin:/bin"
