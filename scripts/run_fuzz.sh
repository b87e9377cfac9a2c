#!/usr/bin/env bash
# Runs each libFuzzer target in build dir $1 for $2 seconds, seeded from the committed seeds of
# tests/fuzz/seeds/<target>/ (scripts/make_fuzz_seeds.py writes them) plus real files: the
# GGUFs under ../shared, its tokenizer test inputs, and the chat templates of
# tests/data/chat_templates. A crash, a sanitizer report, a unit slower than 30 s or one using
# more than 2 GB fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build-fuzz}
secs=${2:-15}
shared=${KILN_SHARED:-$root/../shared}
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp -r tests/fuzz/seeds/. "$corpus/"
mkdir -p "$corpus/gguf" "$corpus/tokenizer" "$corpus/jinja"
cp "$shared"/models/*/*.gguf "$corpus/gguf/"
for f in "$shared"/tokenizer-vectors/ggml-vocab-{llama-spm,gpt-2}.gguf; do
  [ -f "$f" ] && head -c 200000 "$f" > "$corpus/gguf/$(basename "$f")"
done
for f in "$shared"/tokenizer-vectors/*.inp; do head -c 4096 "$f" > "$corpus/tokenizer/$(basename "$f")"; done
cp tests/data/chat_templates/*.jinja "$corpus/jinja/"
status=0
for target in "$build"/fuzz_*; do
  [ -x "$target" ] || continue
  name=$(basename "$target")
  kind=${name#fuzz_}
  seeds="$corpus/$kind"
  [ -d "$seeds" ] || seeds="$corpus/gguf"
  echo "fuzz: $name for ${secs}s"
  if ! "$target" -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 -artifact_prefix="$corpus/" "$seeds" > "$corpus/$name.log" 2>&1; then
    tail -n 40 "$corpus/$name.log"
    echo "fuzz: $name FAILED"
    mkdir -p fuzz-artifacts && cp "$corpus"/crash-* "$corpus"/leak-* "$corpus"/timeout-* "$corpus"/oom-* fuzz-artifacts/ 2>/dev/null || true
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$corpus/$name.log" | tail -n 2
  fi
done
exit $status
