#!/usr/bin/env bash
# Runs each libFuzzer target in build dir $1 for $2 seconds, seeded from real files: the GGUFs
# under ../shared and safetensors files written by scripts/make_fuzz_seeds.py. A crash fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build-fuzz}
secs=${2:-30}
shared=${KILN_SHARED:-$root/../shared}
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
mkdir -p "$corpus/gguf" "$corpus/safetensors" "$corpus/tokenizer"
cp "$shared"/models/*/*.gguf "$corpus/gguf/"
for f in "$shared"/tokenizer-vectors/ggml-vocab-{llama-spm,gpt-2}.gguf; do
  [ -f "$f" ] && head -c 200000 "$f" > "$corpus/gguf/$(basename "$f")"
done
.venv/bin/python scripts/make_fuzz_seeds.py "$corpus/safetensors"
for f in "$shared"/tokenizer-vectors/*.inp; do head -c 4096 "$f" > "$corpus/tokenizer/$(basename "$f")"; done
status=0
for target in "$build"/fuzz_*; do
  [ -x "$target" ] || continue
  name=$(basename "$target")
  kind=${name#fuzz_}
  seeds="$corpus/$kind"
  [ -d "$seeds" ] || seeds="$corpus/gguf"
  echo "fuzz: $name for ${secs}s"
  if ! "$target" -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$corpus/" "$seeds" > "$corpus/$name.log" 2>&1; then
    tail -n 40 "$corpus/$name.log"
    echo "fuzz: $name FAILED"
    mkdir -p fuzz-artifacts && cp "$corpus"/crash-* "$corpus"/leak-* "$corpus"/timeout-* fuzz-artifacts/ 2>/dev/null || true
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$corpus/$name.log" | tail -n 2
  fi
done
exit $status
