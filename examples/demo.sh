#!/usr/bin/env bash
# `make demo`: the main job end to end, offline, on the bundled Fashion-MNIST subset.
# pretrain -> fine-tune at a higher resolution -> evaluate -> export a SavedModel ->
# classify the test images through that SavedModel with plain TensorFlow.
set -euo pipefail
cd "$(dirname "$0")/.."

VITCLI=${VITCLI:-.venv/bin/vitcli}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=examples/data/fashion-mnist
OUT=${DEMO_OUT:-demo}
rm -rf "$OUT"
mkdir -p "$OUT"
started=$(date +%s)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
top1() { "$PYTHON" -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['top1']:.2%}\")" "$1"; }

step "1/5 pre-train a micro ViT (vit-mu7) from scratch at 21 px"
"$VITCLI" pretrain --config examples/recipes/fashion-mnist-pretrain.yaml --out "$OUT/pretrain"

step "2/5 fine-tune it at 28 px (position embeddings interpolated 3x3 -> 4x4)"
"$VITCLI" finetune --config examples/recipes/fashion-mnist-finetune.yaml \
    --weights "$OUT/pretrain" --out "$OUT/finetune"

step "3/5 evaluate both on the 1,000 test images"
"$VITCLI" evaluate "$OUT/pretrain" --data "$DATA" --json > "$OUT/pretrain-test.json"
"$VITCLI" evaluate "$OUT/finetune" --data "$DATA" --out "$OUT/finetune/eval-test"
"$VITCLI" evaluate "$OUT/finetune" --data "$DATA" --json > "$OUT/finetune-test.json"

step "4/5 export the fine-tuned model as a TF Serving SavedModel"
"$VITCLI" export "$OUT/finetune" --format savedmodel --out "$OUT/serving"

step "5/5 classify the test images through the SavedModel (encoded PNG bytes in)"
"$PYTHON" examples/classify_savedmodel.py "$OUT/serving" "$DATA/test" \
    2> >(grep -vE '^(WARNING: All log|[IEW]0000|To enable the following)' >&2) \
    | tee "$OUT/served.txt"

step "summary ($(($(date +%s) - started)) s)"
echo "pre-trained at 21 px, test top-1:        $(top1 "$OUT/pretrain-test.json")"
echo "fine-tuned at 28 px, test top-1:         $(top1 "$OUT/finetune-test.json")"
echo "exported SavedModel, test top-1:         $(grep -o '[0-9.]*% test' "$OUT/served.txt" | cut -d' ' -f1)"
