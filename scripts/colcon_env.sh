# Environment for `colcon build` of lotus2_ros against the project's venv. Source it (bash/zsh):
#
#     . scripts/colcon_env.sh [VENV]      # VENV defaults to $LOTUS2_VENV, else <repo>/.venv
#
# It activates the venv for CMake (PATH, VIRTUAL_ENV: FindPython3 then picks the venv's Python,
# whose NumPy and headers the generated message code is compiled against) and, when the ROS 2
# PyPI wheels are installed in the venv, adds the venv as an ament/CMake prefix so that
# find_package(ament_cmake), rosidl and std_msgs are found there. With a sourced system ROS 2,
# its prefixes stay in AMENT_PREFIX_PATH/CMAKE_PREFIX_PATH as they are.
# The wheels' CMake files must have been fixed once (scripts/fix_ros_wheels_cmake.py, which
# `make venv` runs).

if [ -n "${BASH_SOURCE:-}" ]; then
  _lotus2_here="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ]; then
  _lotus2_here="${(%):-%x}"
else
  _lotus2_here="$0"
fi
_lotus2_repo="$(cd "$(dirname "$_lotus2_here")/.." && pwd)"
_lotus2_venv="${1:-${LOTUS2_VENV:-$_lotus2_repo/.venv}}"

if [ ! -x "$_lotus2_venv/bin/python" ]; then
  echo "colcon_env.sh: no venv at $_lotus2_venv (run: make venv)" >&2
else
  _lotus2_venv="$(cd "$_lotus2_venv" && pwd)"
  export VIRTUAL_ENV="$_lotus2_venv"
  case ":$PATH:" in
    *":$_lotus2_venv/bin:"*) ;;
    *) export PATH="$_lotus2_venv/bin:$PATH" ;;
  esac
  if [ -d "$_lotus2_venv/share/ament_index" ]; then
    case ":${AMENT_PREFIX_PATH:-}:" in
      *":$_lotus2_venv:"*) ;;
      *) export AMENT_PREFIX_PATH="$_lotus2_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
    esac
    case ":${CMAKE_PREFIX_PATH:-}:" in
      *":$_lotus2_venv:"*) ;;
      *) export CMAKE_PREFIX_PATH="$_lotus2_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;;
    esac
  fi
fi
unset _lotus2_here _lotus2_repo _lotus2_venv
