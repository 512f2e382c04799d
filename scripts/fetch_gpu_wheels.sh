#!/usr/bin/env bash
# Wheels the GPU image lacks (../shared/STACK.md), for Python 3.12, into wheels/gpu/
# (git-ignored; the device run carries the folder): trl and datasets with the pure-Python
# dependencies datasets needs that the image does not have.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d wheels/gpu \
  trl==1.16.0 datasets==5.2.0 dill multiprocess xxhash
ls wheels/gpu
