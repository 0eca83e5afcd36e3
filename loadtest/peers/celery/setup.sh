#!/bin/sh
# Sets up the Celery peer: a virtual environment in loadtest/peers/celery/.venv with Celery from
# PyPI. Needs Python 3 (3.11 tested) with venv, and network access to PyPI. Idempotent.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install --quiet --upgrade pip
"$here/.venv/bin/python" -m pip install --quiet "celery${CELERY_VERSION:+==$CELERY_VERSION}"
"$here/.venv/bin/celery" --version
