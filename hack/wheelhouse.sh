#!/usr/bin/env bash
# Fills wheelhouse/ with every wheel the image build installs (the runtime dependencies
# of pyproject.toml and its `live` extra, and setuptools to build the package itself), for CPython 3.11 on
# this machine's platform, so that `docker build --build-arg PIP_NO_INDEX=1` needs no
# package index. Run it where PyPI (or a mirror) is reachable; copy the folder across
# an air gap with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
mapfile -t requirements < <("$python" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
build = project["build-system"]["requires"]
print("\n".join([*build, *project["project"]["dependencies"], *project["project"]["optional-dependencies"]["live"]]))
PY
)
# --only-binary with --python-version: the image's Python (3.11), not this host's.
"$python" -m pip download --quiet --dest wheelhouse --only-binary=:all: \
  --python-version 3.11 --implementation cp "${requirements[@]}"
ls wheelhouse/*.whl | wc -l | xargs printf 'wheelhouse/: %s wheels\n'
