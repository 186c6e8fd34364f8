#!/usr/bin/env bash
# Makes sure efl's TensorFlow 2 stack has a Python (3.10 to 3.13, see tools/find_python_tf2.sh): when none is
# found, installs python3.11 and its venv module from Debian's packages, where this shell may install packages.
# Never fails: without a Python, `make setup TF=2` says what is missing.
cd "$(dirname "$0")/.." || exit 0
if tools/find_python_tf2.sh >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "TF 2 stack: no Python 3.10 to 3.13 found and none can be installed here"
  exit 0
fi
echo "TF 2 stack: installing python3.11 and python3.11-venv"
# Bounded: an unreachable package mirror must not stall the build.
if ! { timeout 300 apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq python3.11 python3.11-venv; } \
    >/tmp/efl-apt-python.log 2>&1; then
  echo "TF 2 stack: apt-get failed (log: /tmp/efl-apt-python.log)"
fi
exit 0
