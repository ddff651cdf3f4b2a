#!/usr/bin/env bash
# make bench: throughput and memory of vitcli vs timm (PyTorch CPU) vs keras-hub, and the input
# pipeline vs training. Writes benchmarks/results.md and benchmarks/results.json.
#
#   bash benchmarks/run.sh            # the full run (~20-25 minutes on 2 cores, quiet machine)
#   bash benchmarks/run.sh --quick    # vit-ti16 only, fewer steps (~5 minutes)
#   bash benchmarks/run.sh --models vit-ti16,vit-s16
#
# The benchmark has its own virtual environment, .venv-bench (never the project's .venv):
# torch, timm and keras-hub are installed there only. See benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${BENCH_VENV:-.venv-bench}
PY="$VENV/bin/python"
# Bump when the list below changes: the environment is then rebuilt.
SPEC="torch==2.13.0 timm==1.0.31 keras-hub==0.32.0 v1"
STAMP="$VENV/.bench-installed"

QUICK=()
THROUGHPUT_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=(--quick); shift ;;
        --models|--rounds) THROUGHPUT_ARGS+=("$1" "$2"); shift 2 ;;
        *) echo "usage: bash benchmarks/run.sh [--quick] [--models vit-ti16,...] [--rounds N]" >&2; exit 2 ;;
    esac
done

install_environment() {
    test -x "$PY" || "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    # torch first, pinned: the CPU wheel 2.13.0+cpu is the one that installs here. Anything that
    # asks for plain `torch` later would otherwise pull a newer CUDA build (GBs of nvidia-*).
    "$PY" -m pip install --quiet "torch==2.13.0"
    "$PY" -m pip install --quiet -e .
    # timm without its dependencies: it requires torchvision, which has no CPU build here (and
    # would pull a newer torch); its other requirements are installed by name. The import-only
    # stand-in in benchmarks/torchvision_standin replaces torchvision for the timm runs.
    echo "(pip reports that timm requires torchvision and keras-hub tensorflow-text,"
    echo " kagglehub, kagglesdk and sentencepiece: expected, see benchmarks/README.md)"
    "$PY" -m pip install --quiet --no-deps "timm==1.0.31"
    "$PY" -m pip install --quiet pyyaml huggingface_hub safetensors
    # keras-hub without its dependencies: it requires tensorflow-text (a second TF native
    # library, only for text tokenizers), kagglehub/kagglesdk (preset downloads) and
    # sentencepiece; the ViT backbone needs none of them. What `import keras_hub` needs:
    "$PY" -m pip install --quiet --no-deps "keras-hub==0.32.0"
    "$PY" -m pip install --quiet absl-py numpy packaging regex rich tokenizers
    "$PY" - <<'EOF'
from importlib.metadata import PackageNotFoundError, distributions, version

assert version("torch").startswith("2.13.0"), version("torch")
assert version("tensorflow").startswith("2.21."), version("tensorflow")
assert version("keras").startswith("3.15."), version("keras")
names = {dist.metadata["Name"].lower() for dist in distributions()}
assert not {"torchvision", "tensorflow-text"} & names, "unexpected package installed"
assert not [name for name in names if name.startswith("nvidia-")], "CUDA packages installed"
print("bench environment:", ", ".join(f"{name} {version(name)}" for name in
      ("tensorflow", "keras", "keras-hub", "torch", "timm", "vitcli")))
EOF
    echo "$SPEC" > "$STAMP"
}

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$SPEC" ]; then
    install_environment
fi

# The stand-in goes on PYTHONPATH for the timm runs only (throughput.py sets it per subprocess).
PYTHONPATH=benchmarks/torchvision_standin "$PY" benchmarks/check_standin.py
"$PY" benchmarks/throughput.py "${QUICK[@]}" "${THROUGHPUT_ARGS[@]}"
"$PY" benchmarks/pipeline.py "${QUICK[@]}"
"$PY" benchmarks/startup.py
echo "results: benchmarks/results.md, benchmarks/results.json"
