#!/usr/bin/env bash
# Long training runs on a lent GPU, spread over several device calls: two lanes of runs side by side,
# each run resumable, so a run cut at one call's time limit goes on in the next call on the same (warm)
# machine instead of being lost (a `compare` run cut short leaves nothing).
#
#   DEADLINE=540 PYTHONPATH=$PWD bash benchmarks/gpu_queue.sh        # from the repo root, packs in .carry/
#   bash benchmarks/gpu_queue.sh --smoke                             # CPU, tiny models, a few real images
#
# Call it again with the same settings (DEADLINE = the seconds this call may take): finished runs are kept,
# an unfinished one resumes from its last checkpoint (--checkpoint-every EVERY epochs, default 10), one with
# no checkpoint starts again. The runs live in QUEUE (default runs/queue, git-ignored), which a warm device
# machine keeps between calls (a fresh one starts bare, and everything runs again).
#
# LANE_A and LANE_B (spaces between items) run side by side, each item after the one before it in its lane:
#   DATA:METHOD:BACKBONE   examples.leukemia.train on .carry/<pack of DATA> (pbc: PBC_PACK, a name in .carry/
#                          or an absolute path, default pbc128_c70.npz; all4: all4_128.npz), EPOCHS (40), batch 256, seed 0: the recipe
#                          of benchmarks/gpu_run.sh's comparisons; then examples.leukemia.evaluate on the test
#                          split with the method's own rule and with argmax_leaf (EXTRA_DECODES adds more)
#   baseline               the team's peer baseline (.carry/tools/flat_baseline_gpu_data.py, flat ResNet-18
#                          over PBC's 8 classes, 40 epochs) on the same PBC pack
# Defaults: LANE_A="pbc:per-level:convnext_tiny", LANE_B="pbc:per-level:vit_small_patch16_224 baseline
# pbc:per-level:resnet18 all4:per-level:convnext_tiny all4:per-level:vit_small_patch16_224".
# Every run's timeout is the time left to DEADLINE less RESERVE s (default 40, kept for the last
# readouts and the report). A run folder remembers its settings (pack, EPOCHS, EVERY): a later call with
# others refuses it by name instead of resuming it or keeping it as done. The exit status is 1 when a run,
# readout or the baseline failed in this call (a run cut at the deadline is no failure), else 0. Out (in $OUT, at most 8 files): queue.log (this call's log), queue.json (every
# run: state, its summary and its readouts; tools/flat_baseline's JSON), queue.tar.gz (log.csv, config and
# readouts of every run, no weights).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-540}
RESERVE=${RESERVE:-40}
EVERY=${EVERY:-10}
for v in DEADLINE RESERVE EVERY; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "$v: expected whole seconds (or epochs for EVERY), got '${!v}'" >&2; exit 2; }
done
EPOCHS=${EPOCHS:-}  # epochs of every training run (default 40; 2 with --smoke)
[[ -z "$EPOCHS" || "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || { echo "EPOCHS: expected a whole number >= 1, got '$EPOCHS'" >&2; exit 2; }
EXTRA_DECODES=${EXTRA_DECODES:-}
for rule in $EXTRA_DECODES; do
  [[ " auto argmax_leaf top_down threshold crm hf_optimal " == *" $rule "* ]] \
    || { echo "EXTRA_DECODES: expected rules among auto argmax_leaf top_down threshold crm hf_optimal, got '$rule'" >&2; exit 2; }
done
if (( SMOKE )); then
  LANE_A=${LANE_A-pbc:per-level:test_convnext}
  LANE_B=${LANE_B-pbc:hierarchical:test_vit baseline all4:per-level:test_resnet}
else
  LANE_A=${LANE_A-pbc:per-level:convnext_tiny}
  LANE_B=${LANE_B-pbc:per-level:vit_small_patch16_224 baseline pbc:per-level:resnet18 all4:per-level:convnext_tiny all4:per-level:vit_small_patch16_224}
fi
seen=" "
for item in $LANE_A $LANE_B; do
  [[ "$item" == baseline || "$item" =~ ^(pbc|all4):(flat|per-level|hierarchical):[A-Za-z0-9_.-]+$ ]] \
    || { echo "LANE_A/LANE_B: expected items DATA:METHOD:BACKBONE (DATA pbc or all4) or baseline, got '$item'" >&2; exit 2; }
  [[ "$seen" != *" $item "* ]] \
    || { echo "LANE_A/LANE_B: '$item' is named twice (two trainings would share one folder); name it once" >&2; exit 2; }
  seen+="$item "
done
QUEUE=$(realpath -m "${QUEUE:-$ROOT/runs/queue}")
OUT=${OUT:-$ROOT/runs/queue_out}
export OUT
if (( SMOKE )); then
  # tiny packs of a few real images per class (../shared/data, made once in QUEUE/smoke_carry), tiny
  # models, EPOCHS (2) epochs on CPU, a checkpoint every epoch
  DATA=${HIERCLS_SHARED_DATA:-$ROOT/../shared/data}
  [[ -d "$DATA/pbc" && -d "$DATA/all4" ]] || { echo "--smoke: no real images at $DATA (set HIERCLS_SHARED_DATA)" >&2; exit 2; }
  CARRY="$QUEUE/smoke_carry"; mkdir -p "$CARRY/tools"
  cp "$DATA/../tools/"*.py "$CARRY/tools/" 2>/dev/null || cp "$ROOT/.carry/tools/"*.py "$CARRY/tools/" \
    || { echo "--smoke: the peer-baseline tools are neither in $DATA/../tools nor in .carry/tools" >&2; exit 2; }
  [[ -f "$CARRY/pbc128.npz" && -f "$CARRY/all4_128.npz" ]] || bash benchmarks/smoke_packs.sh "$DATA" "$CARRY" || exit 1
  PBC="$CARRY/pbc128.npz" ALL4="$CARRY/all4_128.npz"
  EPOCHS=${EPOCHS:-2} EVERY=1
  TRAIN_EXTRA=(--batch-size 16 --device cpu --threads 1) EVAL_EXTRA=(--device cpu)
  BASE_EXTRA=(--models test_resnet --epochs 1 --bs 16)
else
  CARRY="$ROOT/.carry"
  PBC=${PBC_PACK:-pbc128_c70.npz}
  [[ "$PBC" == /* ]] || PBC="$CARRY/$PBC"  # a name in .carry/, or an absolute path
  ALL4="$CARRY/all4_128.npz"
  EPOCHS=${EPOCHS:-40}
  TRAIN_EXTRA=(--batch-size 256) EVAL_EXTRA=() BASE_EXTRA=(--models resnet18 --epochs 40)
fi
for f in "$PBC" "$ALL4"; do
  [[ -f "$f" ]] || { echo "no pack $f: make it first (bash benchmarks/prepare_carry.sh)" >&2; exit 2; }
done
mkdir -p "$QUEUE" "$OUT"  # every setting and input is checked: only now is anything created (--smoke made its packs above)
exec > >(tee "$OUT/queue.log") 2>&1
TEE_PID=$!
T0=$(date +%s)
left() { echo $(( DEADLINE - RESERVE - ($(date +%s) - T0) )); }
say() { echo "$(date +%H:%M:%S) [+$(( $(date +%s) - T0 ))s] $*"; }
(( SMOKE )) || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"

FAILURES="$QUEUE/.failures_of_this_call"
: > "$FAILURES"
fail() { say "$*"; echo "$*" >> "$FAILURES"; }
# the settings a run was started with: a later call must not resume it, or keep it as done, under others
settings_of() { echo "pack=$(basename "$1") epochs=$EPOCHS every=$EVERY train=${TRAIN_EXTRA[*]}"; }

# run_item ITEM: train (or resume) and read out one run; a finished one is skipped
run_item() {
  local item=$1
  if [[ "$item" == baseline ]]; then
    [[ -f "$QUEUE/baseline/done" ]] && { say "baseline: done in an earlier call"; return; }
    local t; t=$(left); (( t < 20 )) && { say "baseline: no time left"; return; }
    mkdir -p "$QUEUE/baseline"
    say "baseline: start (timeout ${t}s)"
    OUT="$QUEUE/baseline" timeout --signal=TERM --kill-after=10 "$t" $PY "$CARRY/tools/flat_baseline_gpu_data.py" "$PBC" \
      "${BASE_EXTRA[@]}" > "$QUEUE/baseline/stdout.log" 2>&1
    local rc=$?
    if (( rc == 0 )); then
      touch "$QUEUE/baseline/done"; say "baseline: exit 0 $(tail -c 300 "$QUEUE/baseline/stdout.log" | tr '\n' ' ')"
    elif (( rc == 124 || rc == 137 )); then say "baseline: cut at the deadline (exit $rc)"
    else fail "baseline: exit $rc (see $QUEUE/baseline/stdout.log)"; fi
    return
  fi
  local data method backbone pack dir want
  IFS=: read -r data method backbone <<< "$item"
  [[ "$data" == pbc ]] && pack=$PBC || pack=$ALL4
  dir="$QUEUE/$data-$method-$backbone"
  want=$(settings_of "$pack")
  if [[ -f "$dir/queue_settings.txt" && "$(cat "$dir/queue_settings.txt")" != "$want" ]]; then
    fail "$item: $dir holds a run started with other settings ($(cat "$dir/queue_settings.txt"); now $want): delete that folder to start again, or give another QUEUE"
    return
  fi
  if [[ ! -f "$dir/done" ]]; then
    local t; t=$(left); (( t < 30 )) && { say "$item: no time left (${t}s)"; return; }
    local mode=(--overwrite)
    [[ -f "$dir/last.json" ]] && mode=(--resume)
    say "$item: ${mode[0]#--} (timeout ${t}s)"
    timeout --signal=TERM --kill-after=15 "$t" $PY -m examples.leukemia.train --pack "$pack" --method "$method" \
      --backbone "$backbone" --epochs "$EPOCHS" --seed 0 --checkpoint-every "$EVERY" --quiet --no-tensorboard \
      "${TRAIN_EXTRA[@]}" --output "$dir" "${mode[@]}" >> "$dir.log" 2>&1
    local rc=$?
    [[ -d "$dir" ]] && echo "$want" > "$dir/queue_settings.txt"  # after train: --overwrite empties the folder
    say "$item: train exit $rc, $(( $(grep -c . "$dir/log.csv" 2>/dev/null || echo 1) - 1 )) epochs logged"
    if (( rc == 0 )); then touch "$dir/done"
    elif (( rc == 124 || rc == 137 )); then return  # cut at the deadline: the next call resumes it
    else fail "$item: train exit $rc (see $dir.log)"; return; fi
  fi
  local rule
  for rule in auto argmax_leaf $EXTRA_DECODES; do
    [[ -f "$dir/eval_$rule/done" ]] && continue
    local t; t=$(( DEADLINE - ($(date +%s) - T0) - 10 )); (( t < 30 )) && { say "$item: no time for the $rule readout"; return; }
    rm -rf "$dir/eval_$rule"  # what a readout cut in an earlier call left (its results.json may be partial)
    timeout --signal=TERM --kill-after=5 "$t" $PY -m examples.leukemia.evaluate "$dir/best.json" --pack "$pack" --decode "$rule" \
      --no-figures "${EVAL_EXTRA[@]}" --out "$dir/eval_$rule" >> "$dir.log" 2>&1
    local rc=$?
    say "$item: $rule readout exit $rc"
    if (( rc == 0 )); then touch "$dir/eval_$rule/done"
    elif (( rc != 124 && rc != 137 )); then fail "$item: $rule readout exit $rc (see $dir.log)"; fi
  done
}
lane() { local item; for item in "$@"; do run_item "$item"; done; }

report() {
  $PY - "$QUEUE" "$OUT/queue.json" <<'EOF'
import json, sys
from pathlib import Path
q, out = Path(sys.argv[1]), {}


def read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:  # a file cut mid-write: say so, keep the rest of the report
        return {"unreadable": f"{type(err).__name__}: {err}"}


for d in sorted(p for p in q.iterdir() if p.is_dir() and p.name != "smoke_carry"):
    row = {"done": (d / "done").is_file()}
    if (d / "queue_settings.txt").is_file():
        row["settings"] = (d / "queue_settings.txt").read_text().strip()
    if (d / "last.json").is_file():
        last = read(d / "last.json")
        if isinstance(last.get("epoch"), int):
            row["epochs_in_last_checkpoint"] = last["epoch"] + 1
    if (d / "log.csv").is_file():
        lines = (d / "log.csv").read_text().splitlines()
        row["epochs_logged"] = max(len(lines) - 1, 0)
        row["log_csv"] = lines
    for name in ("summary.json", "pbc_flat_baseline.json"):
        if (d / name).is_file():
            row[name] = read(d / name)
    for e in sorted(d.glob("eval_*/results.json")):
        row[e.parent.name] = read(e) if (e.parent / "done").is_file() else {"unfinished": "the readout was cut"}
    out[d.name] = row
Path(sys.argv[2]).write_text(json.dumps(out, indent=1, default=str) + "\n")
EOF
  (cd "$QUEUE" && find . -path ./smoke_carry -prune -o \( -name '*.log' -o -name 'log.csv' -o -name '*.json' -o -name '*.md' -o -name '*.txt' \) -print \
    | tar czf "$OUT/queue.tar.gz" -T - 2>/dev/null) || true
}

say "queue in $QUEUE; deadline ${DEADLINE}s (runs end by $(( DEADLINE - RESERVE ))s); lane A: $LANE_A; lane B: $LANE_B"
lane $LANE_A &
PA=$!
lane $LANE_B &
PB=$!
wait $PA $PB
report || fail "the report failed"
for d in "$QUEUE"/*/; do
  n=$(basename "$d"); [[ "$n" == smoke_carry ]] && continue
  if [[ -f "$d/done" ]]; then s=done
  elif [[ -f "$d/last.json" ]]; then
    s="resumable (checkpoint after $($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["epoch"] + 1)' "$d/last.json" 2>/dev/null || echo '?') epochs)"
  else s="not started or no checkpoint"; fi
  say "$n: $s"
done
say "end; files in $OUT:"; ls -la "$OUT"
rc=0
if [[ -s "$FAILURES" ]]; then say "failed in this call:"; cat "$FAILURES"; rc=1; fi
exec 1>&- 2>&-
wait "$TEE_PID" 2>/dev/null || sleep 1
exit $rc
