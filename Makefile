# lotus2_ros developer entry points. Every target creates or reuses .venv in the checkout.
#
#   make venv    create/update .venv (torch CPU, deps, ROS 2 wheels unless a ROS 2 is sourced)
#   make test    run the test suite (PYTEST_ARGS="-k scale" to narrow it)
#   make demo    run `lotus2 demo` with the trained demo model (DEMO_ARGS="..." to pass options;
#                DEMO_BACKEND=lotus1 for the Lotus-1 demo model)
#   make build   colcon build of the ROS package into .colcon/{build,install,log}
#   make clean   remove build outputs and caches (keeps .venv); make distclean also removes .venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
# The ROS 2 wheels on PyPI are built for CPython 3.11: prefer it when no ROS 2 is sourced.
# With a sourced ROS 2, use the system python3 that its rclpy belongs to.
ifdef ROS_DISTRO
PYTHON ?= python3
else
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
endif
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q
DEMO_ARGS ?=
# The small model trained on synthetic scenes (scripts/train_demo_model.sh); DEMO_MODEL= uses the
# tiny random model instead.
# DEMO_BACKEND=lotus1 runs the Lotus-1 demo model (scripts/train_lotus1_demo_model.sh) instead.
DEMO_BACKEND ?= lotus2
ifeq ($(DEMO_BACKEND),lotus1)
DEMO_MODEL ?= models/demo_lotus1
else
DEMO_MODEL ?= models/demo
endif
COLCON_DIR := .colcon
COLCON_ARGS ?=

.PHONY: help venv test demo build clean distclean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv:
	@$(PYTHON) scripts/setup_venv.py --venv $(VENV)

# Exit status 5 is pytest's "no tests collected" (e.g. PYTEST_ARGS="-k nothing"): not a failure.
# Tests that start ROS nodes keep DDS traffic on this machine.
test: venv
	@rc=0; ROS_AUTOMATIC_DISCOVERY_RANGE=$${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} \
	  $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

demo: venv
	$(VENV)/bin/lotus2 demo --backend $(DEMO_BACKEND) $(if $(DEMO_MODEL),--model $(DEMO_MODEL)) $(DEMO_ARGS)

build: venv
	@. scripts/colcon_env.sh $(VENV) && \
	  colcon --log-base $(COLCON_DIR)/log build --base-paths . --packages-select lotus2_ros \
	    --build-base $(COLCON_DIR)/build --install-base $(COLCON_DIR)/install $(COLCON_ARGS)
	@echo "use it with: source $(COLCON_DIR)/install/setup.bash"

clean:
	rm -rf $(COLCON_DIR) build install log .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
