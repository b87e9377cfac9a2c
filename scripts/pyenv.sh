#!/usr/bin/env bash
# Creates .venv with the pinned test oracles (tests/requirements.txt); reinstalls when the
# requirements change.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
req=tests/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "pyenv: installing $(grep -cv '^#' "$req") pinned packages into .venv" >&2
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" > "$stamp"
