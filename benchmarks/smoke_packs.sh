#!/usr/bin/env bash
# Tiny packs for the --smoke runs of benchmarks/gpu_run.sh and benchmarks/gpu_queue.sh: a few real images of
# every PBC class and file-name prefix (5) and of every ALL class (12), packed at 32 px.
#
#   bash benchmarks/smoke_packs.sh DATA OUT_DIR [PBC_NAME [ALL4_NAME]]
#
# DATA holds pbc/ and all4/ (../shared/data); writes OUT_DIR/PBC_NAME (default pbc128.npz) and
# OUT_DIR/ALL4_NAME (default all4_128.npz), the names the GPU scripts read; the images are linked, not copied.
set -euo pipefail
(( $# >= 2 )) || { echo "usage: bash $0 DATA OUT_DIR [PBC_NAME [ALL4_NAME]]" >&2; exit 2; }
DATA=$1 OUT=$2 PBC_NAME=${3:-pbc128.npz} ALL4_NAME=${4:-all4_128.npz}
[[ -d "$DATA/pbc" && -d "$DATA/all4" ]] || { echo "DATA=$DATA: expected pbc/ and all4/ in it" >&2; exit 2; }
PY=${PYTHON:-python3}
mkdir -p "$OUT"
MINI=$(mktemp -d "${TMPDIR:-/tmp}/smoke_packs.XXXXXX")
trap 'rm -rf "$MINI"' EXIT
$PY - "$DATA" "$MINI" <<'PYEOF'
import os, sys
from collections import defaultdict
src, dst = sys.argv[1], sys.argv[2]
for ds, per in (("pbc", 5), ("all4", 12)):
    top = os.path.join(src, ds)
    seen = defaultdict(int)
    for dirpath, _, files in sorted(os.walk(top)):
        for f in sorted(files):
            key = (dirpath, f.split("_")[0] if "_" in f else "")
            if seen[key] < per:
                seen[key] += 1
                rel = os.path.relpath(os.path.join(dirpath, f), top)
                os.makedirs(os.path.dirname(os.path.join(dst, ds, rel)), exist_ok=True)
                os.symlink(os.path.join(dirpath, f), os.path.join(dst, ds, rel))
PYEOF
$PY -m examples.leukemia.pack --data "$MINI/pbc" --size 32 --out "$OUT/$PBC_NAME" --no-progress
$PY -m examples.leukemia.pack --data "$MINI/all4" --size 32 --out "$OUT/$ALL4_NAME" --no-progress
