#!/usr/bin/env bash
# Write requirements.lock: everything `make setup` installs (the project's dependencies with the test extra,
# the build backend and pip), each at one exact version with the sha256 hashes of its files on PyPI,
# resolved by uv from the ranges in pyproject.toml for every platform and every Python >= 3.11.
#
# Run it after changing a dependency in pyproject.toml: pins that still fit are kept, so only what the change
# needs moves. `scripts/lock.sh --upgrade` moves every pin to the newest release the ranges allow;
# `--upgrade-package NAME` moves one. Other arguments go to `uv pip compile` too.
#
# Needs uv at the version below: UV=/path/to/uv, else the one in .venv, installed there when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

UV_VERSION=0.13.9
PY="${PYTHON:-.venv/bin/python}"
UV="${UV:-.venv/bin/uv}"

if [[ "$("$UV" --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
  [[ -x "$PY" ]] || { echo "lock.sh: no $PY; run make setup first (or set PYTHON or UV)" >&2; exit 1; }
  "$PY" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  UV="$(dirname "$PY")/uv"
fi

# The tools that install the project are pinned with it: pip, and the build backend pyproject.toml names.
tools="$("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
pip>=25"

printf '%s\n' "$tools" | "$UV" pip compile pyproject.toml - --extra test \
  --universal --python-version 3.11 --generate-hashes \
  --custom-compile-command "scripts/lock.sh" --output-file requirements.lock --quiet "$@"
echo "lock.sh: requirements.lock written ($(grep -c '^[a-z0-9].*==' requirements.lock) packages)"
