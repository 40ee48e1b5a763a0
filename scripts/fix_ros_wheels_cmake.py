#!/usr/bin/env python3
"""Point the CMake exports of the ROS 2 PyPI wheels at this machine's Python and NumPy headers.

The ``ros-*`` message wheels are built on a manylinux image, and each one installs CMake export
files (``share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake``) whose imported target
``<pkg>::<pkg>__rosidl_generator_py`` lists the *build machine's* include directories, e.g.::

    INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;
        /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"

Any package that generates messages depending on them (``rosidl_generate_interfaces(...
DEPENDENCIES std_msgs)``) links that target, and CMake stops at generate time with
``Imported target "std_msgs::std_msgs__rosidl_generator_py" includes non-existent path``.

This script rewrites, inside one prefix (default: the running interpreter's ``sys.prefix``, i.e.
the venv), every Python include directory and every NumPy include directory found in an
``INTERFACE_INCLUDE_DIRECTORIES`` line of a ``*.cmake`` file to the directories of the running
interpreter.

It also writes ``local_setup.{sh,bash,zsh}`` at the top of the prefix (the wheels install none):
they add the prefix to ``AMENT_PREFIX_PATH``, ``CMAKE_PREFIX_PATH`` and ``PATH``, so that colcon
chains the venv like any ROS 2 underlay and a sourced ``install/setup.bash`` of a workspace built
on it also finds the venv's packages through the ament index.

It is idempotent: a second run finds nothing to change. Run it with the venv's Python after
installing or upgrading ROS wheels or NumPy.

Exit status: 0 when the files are (now) correct; with ``--check``, 1 when a rewrite is needed.
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from pathlib import Path

# One path element of a CMake list inside a quoted string: no quote, no separator, no space.
_PATH_TOKEN = re.compile(r'[^";\s()]+')
_PYTHON_INCLUDE = re.compile(r"^/.*/include/python3\.\d+[a-z]*$")
_NUMPY_INCLUDE = re.compile(r"^/.*/numpy/(?:_core|core)/include$")
_MARKER = "INTERFACE_INCLUDE_DIRECTORIES"


def local_include_dirs() -> dict[str, str]:
    """Return this interpreter's include directories by kind ("python", "numpy")."""
    dirs = {"python": sysconfig.get_paths()["include"]}
    try:
        import numpy
    except ImportError:  # without NumPy the wheels' NumPy paths are left as they are
        pass
    else:
        dirs["numpy"] = numpy.get_include()
    return dirs


def _replacement(token: str, local: dict[str, str]) -> str | None:
    if _PYTHON_INCLUDE.match(token):
        return local["python"]
    if "numpy" in local and _NUMPY_INCLUDE.match(token):
        return local["numpy"]
    return None


def fix_text(text: str, local: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """Rewrite include paths on ``INTERFACE_INCLUDE_DIRECTORIES`` lines of one CMake file.

    Returns:
        The new text and the list of (old, new) paths that changed.
    """
    changes: list[tuple[str, str]] = []

    def fix_token(match: re.Match[str]) -> str:
        token = match.group(0)
        new = _replacement(token, local)
        if new is None or new == token:
            return token
        changes.append((token, new))
        return new

    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if _MARKER in line:
            lines[i] = _PATH_TOKEN.sub(fix_token, line)
    return "".join(lines), changes


def cmake_files(prefix: Path) -> list[Path]:
    """CMake files a prefix exports (``share/*/cmake`` and ``lib/cmake``)."""
    files: list[Path] = []
    for root in (prefix / "share", prefix / "lib" / "cmake"):
        if root.is_dir():
            files.extend(p for p in root.rglob("*.cmake") if p.is_file())
    return sorted(files)


def fix_prefix(prefix: Path, *, check: bool = False, verbose: bool = False) -> int:
    """Fix (or with ``check``, only count) the stale include paths below ``prefix``.

    Returns:
        The number of files that needed a rewrite.
    """
    local = local_include_dirs()
    touched = 0
    for path in cmake_files(prefix):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if _MARKER not in text:
            continue
        new_text, changes = fix_text(text, local)
        if not changes:
            continue
        touched += 1
        if verbose:
            for old, new in sorted(set(changes)):
                print(f"{path.relative_to(prefix)}: {old} -> {new}")
        if not check:
            path.write_text(new_text, encoding="utf-8", errors="surrogateescape")
    return touched


_SETUP_SH = """\
# Written by lotus2_ros scripts/fix_ros_wheels_cmake.py: this venv (ROS 2 wheels from PyPI) as an
# ament prefix, so that colcon workspaces built on it chain it like a ROS 2 install.
_lotus2_prefix="{prefix}"
case ":${{AMENT_PREFIX_PATH:-}}:" in *":$_lotus2_prefix:"*) ;; *)
  export AMENT_PREFIX_PATH="$_lotus2_prefix${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}" ;; esac
case ":${{CMAKE_PREFIX_PATH:-}}:" in *":$_lotus2_prefix:"*) ;; *)
  export CMAKE_PREFIX_PATH="$_lotus2_prefix${{CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}}" ;; esac
case ":${{PATH:-}}:" in *":$_lotus2_prefix/bin:"*) ;; *)
  export PATH="$_lotus2_prefix/bin${{PATH:+:$PATH}}" ;; esac
unset _lotus2_prefix
"""
_SETUP_SHELL = """\
# Written by lotus2_ros scripts/fix_ros_wheels_cmake.py (see local_setup.sh).
. "{prefix}/local_setup.sh"
"""


def prefix_setup_files(prefix: Path) -> dict[Path, str]:
    """The ``local_setup.*`` files (path -> content) that make ``prefix`` an ament underlay."""
    root = str(prefix.resolve())
    return {
        prefix / "local_setup.sh": _SETUP_SH.format(prefix=root),
        prefix / "local_setup.bash": _SETUP_SHELL.format(prefix=root),
        prefix / "local_setup.zsh": _SETUP_SHELL.format(prefix=root),
    }


def write_prefix_setup(prefix: Path, *, check: bool = False, verbose: bool = False) -> int:
    """Write (or with ``check``, only count) missing or outdated ``local_setup.*`` files."""
    stale = 0
    for path, content in prefix_setup_files(prefix).items():
        if path.is_file() and path.read_text(encoding="utf-8") == content:
            continue
        stale += 1
        if verbose:
            print(f"{path.name}: {'needs writing' if check else 'written'}")
        if not check:
            path.write_text(content, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix holding share/ (default: sys.prefix, the venv)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a file needs a rewrite")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every rewrite")
    args = parser.parse_args(argv)

    if not (args.prefix / "share").is_dir():
        print(f"fix_ros_wheels_cmake: no share/ under --prefix {args.prefix}", file=sys.stderr)
        return 2
    touched = fix_prefix(args.prefix, check=args.check, verbose=args.verbose)
    touched += write_prefix_setup(args.prefix, check=args.check, verbose=args.verbose)
    verb = "need a rewrite" if args.check else "rewritten"
    print(f"fix_ros_wheels_cmake: {touched} file(s) {verb} under {args.prefix}")
    return 1 if (args.check and touched) else 0


if __name__ == "__main__":
    sys.exit(main())
