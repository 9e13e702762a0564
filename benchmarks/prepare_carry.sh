#!/usr/bin/env bash
# Make .carry/, the inputs of benchmarks/gpu_run.sh, from ../shared (a session's checkout starts without them):
#
#   bash benchmarks/prepare_carry.sh          # from the repo root, with the example installed
#
# Packs PBC (128 px, centre crop 0.7) and ALL (128 px) at JPEG quality 75, copies the peer-baseline tools,
# and checks that the whole folder travels under the device's 64 MiB carry limit. A pack already there is
# kept (delete it to remake it). SHARED=PATH points at another copy of ../shared; PBC_PACK=NAME names the
# PBC pack (gpu_run.sh reads the same variable); CARRY=DIR writes elsewhere than .carry (the tests do).
set -euo pipefail
# SHARED and CARRY given relative to where the script is called from, as usual; the defaults relative to the repo
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ -n "${SHARED:-}" ]] && SHARED=$(realpath -m "$SHARED") || SHARED="$ROOT/../shared"
[[ -n "${CARRY:-}" ]] && CARRY=$(realpath -m "$CARRY") || CARRY="$ROOT/.carry"
cd "$ROOT"
PY=${PYTHON:-python3}
PBC_PACK=${PBC_PACK:-pbc128_c70.npz}
LIMIT=$(( 64 * 1024 * 1024 ))
[[ -d "$SHARED/data/pbc" && -d "$SHARED/data/all4" && -d "$SHARED/tools" ]] \
  || { echo "SHARED=$SHARED: expected data/pbc, data/all4 and tools/ in it" >&2; exit 2; }
compgen -G "$SHARED/tools/*.py" > /dev/null || { echo "SHARED=$SHARED: no tools/*.py (the peer-baseline tools)" >&2; exit 2; }
mkdir -p "$CARRY/tools"
cp "$SHARED"/tools/*.py "$CARRY/tools/"
t0=$(date +%s)
[[ -f "$CARRY/$PBC_PACK" ]] || $PY -m examples.leukemia.pack --data "$SHARED/data/pbc" --size 128 --crop 0.7 \
  --quality 75 --out "$CARRY/$PBC_PACK"
[[ -f "$CARRY/all4_128.npz" ]] || $PY -m examples.leukemia.pack --data "$SHARED/data/all4" --taxonomy all4 \
  --size 128 --quality 75 --out "$CARRY/all4_128.npz"
size=$(du -sb "$CARRY" | cut -f1)
echo "== $CARRY: $(( size / 1024 / 1024 )) MiB in $(( $(date +%s) - t0 )) s:"; ls -la "$CARRY"
(( size <= LIMIT )) || { echo "too big for the device's carry (64 MiB): keep only what gpu_run.sh reads" >&2; exit 1; }
