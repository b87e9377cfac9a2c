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
# One target: its report after it ends (two run at once, one per core: the same fuzzing time
# per target in half the wall time).
run_one() {
  local target=$1 name kind seeds
  name=$(basename "$target")
  kind=${name#fuzz_}
  seeds="$corpus/$kind"
  [ -d "$seeds" ] || seeds="$corpus/gguf"
  if ! "$target" -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 -artifact_prefix="$corpus/$name-" "$seeds" > "$corpus/$name.log" 2>&1; then
    { tail -n 40 "$corpus/$name.log"; echo "fuzz: $name FAILED"; } >&2
    mkdir -p fuzz-artifacts
    cp "$corpus/$name"-crash-* "$corpus/$name"-leak-* "$corpus/$name"-timeout-* \
       "$corpus/$name"-oom-* fuzz-artifacts/ 2>/dev/null || true
    return 1
  fi
  echo "fuzz: $name for ${secs}s: $(grep -E "^Done" "$corpus/$name.log" | tail -n 1)"
}
jobs=${KILN_FUZZ_JOBS:-2}
status=0 running=0
for target in "$build"/fuzz_*; do
  [ -x "$target" ] || continue
  if [ "$running" -ge "$jobs" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
  run_one "$target" &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
exit $status
