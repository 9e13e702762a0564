#!/usr/bin/env bash
# The leukemia example's one job for a lent GPU (H100/H200, 16 cores, torch + timm, no pip).
#
#   PYTHONPATH=$PWD bash benchmarks/gpu_run.sh            # from the repo root; packs in .carry/
#   bash benchmarks/gpu_run.sh --smoke                    # CPU, tiny models, a few real images: end to end
#   (SMOKE_PACKS=DIR: copy DIR's pbc128.npz and all4_128.npz, made by benchmarks/smoke_packs.sh, instead of
#   packing them again: the test suite makes them once for all its smoke runs)
#
# Inputs (made by `python -m examples.leukemia.pack`, never committed; `bash benchmarks/prepare_carry.sh`
# makes all of them from ../shared in about 20 s on 2 cores):
#   .carry/pbc128_c70.npz  .carry/all4_128.npz  .carry/tools/*.py (copies of ../shared/tools)
#     python -m examples.leukemia.pack --data ../shared/data/pbc --size 128 --crop 0.7 --quality 75 --out .carry/pbc128_c70.npz
#     python -m examples.leukemia.pack --data ../shared/data/all4 --taxonomy all4 --size 128 --quality 75 --out .carry/all4_128.npz
#   (a pack also holds the data/offsets/names arrays the peer-baseline tool reads, so the baseline
#   trains on the same pixels; at --quality 75 both travel under the device's 64 MiB carry limit,
#   42 + 11 MB: keep nothing else big in .carry. PBC_PACK=pbc128.npz runs the uncropped pack instead.)
# Stages, each under `timeout` within one overall budget (BUDGET seconds, default 500), partial
# results kept whatever happens:
#   1. peer baseline: tools/flat_baseline_gpu_data.py, flat ResNet-18 over PBC's 8 classes, 40 epochs
#      (its 8-class split is ours image for image; its --fine mode drops IG/NEUTROPHIL first and so
#      splits differently: the fine-leaf flat baseline is the 'flat' run of stage 2 instead)
#   2. examples.leukemia.compare on PBC: flat / hierarchical x resnet18, convnext_tiny,
#      vit_small_patch16_224, then per-level on resnet18 (5 backbones: measured uncropped in session 1; last, so the
#      deadline drops it before the paper's two backbones)
#   3. the same on ALL (fewer runs)
#   4. benchmarks/gpu_step.py: the hierarchical head's cost relative to a flat head
#   5. benchmarks/leukemia_throughput.py: real packed data vs synthetic input, vit_small (the real input also
#      prepared 8 batches per call: --chunks 1,8)
# Output in $OUT (at most 8 plain files): results.json, results.md, gpu_run.log,
# pbc_flat_baseline.json (the tool's), figures.tar.gz (confusion matrices, recall trees).
#
# AT_ONCE=1 (seeds job) runs the peer baseline and every seed's comparison side by side on the one GPU,
# then the readouts: for small models at 128 px, which leave the GPU mostly idle one at a time (their
# img/s are then shared-GPU figures; the accuracies are unaffected). Measured on an H200 (eighth session):
# with five processes side by side a 100-epoch flat ResNet-18 took 152 s against 66 s alone, for about
# 1.3x the work of one process at a time (an estimate): give a long run (a per-level model) a call of its own.
# SIDE_RUNS (with AT_ONCE=1) adds PBC runs of examples.leukemia.compare, each in a process of its own beside
# the seeds, at SIDE_EPOCHS epochs (default 40) and seed 0, separated by commas (or newlines), e.g.:
#   JOB=seeds AT_ONCE=1 SEEDS="0 1" EPOCHS=100 PBC_RUNS=flat:resnet18,hierarchical:resnet18 \
#     SIDE_RUNS=hierarchical:convnext_atto,flat:convnext_atto bash ...
# (a side run that cannot end inside the job's time is killed and reported missing; the readouts and the
# throughput check start only after every side process has ended, so they run on an idle GPU).
# EPOCHS (default 40) sets the epochs of every training run of both jobs' comparisons (not the peer
# baseline's, which keeps its own 40), e.g. a longer schedule for the fine-leaf target on ResNet-18 (19 s
# for 40 flat epochs at 128 px on an H200):
#   JOB=seeds SEEDS="0 1" EPOCHS=100 PBC_RUNS=flat:resnet18,hierarchical:resnet18 TRAIN_ARGS="--ema 0.999" bash ...
# STAGES picks the paper job's stages (default "baseline compare_pbc compare_all4 gpu_step throughput";
# the seeds job's are "baseline seeds throughput", where seeds is every seed's comparison, readout and pooling).
# With compare_pbc alone it gets the whole budget, e.g. the per-level model of the paper's backbones, about
# 9 minutes alone on an H200 (estimated), in two calls:
#   STAGES="compare_pbc throughput" PBC_RUNS=per-level:convnext_tiny BUDGET=480 bash ...
#   STAGES=compare_pbc PBC_RUNS=per-level:vit_small_patch16_224 BUDGET=300 bash ...
# (compare_pbc gets the budget but what the later stages asked for can take: here 55 s for throughput)
# JOB=seeds runs another job with the same stages 1 and 5 (default BUDGET 560): the PBC comparison once
# per seed in SEEDS (default "0 1 2"; runs PBC_RUNS, default flat, hierarchical and hierarchical with the
# library's conditional head, all ResNet-18: what one seed cannot separate; each seed gets an equal share
# of the time left), pooled by
# examples.leukemia.aggregate (mean +- sd, paired differences against flat); the
# same checkpoints read out again with test-time augmentation over the 8 flips and rotations
# (evaluate --tta d4, inference only), pooled the same way; and the throughput check with --profile
# (operator tables of real vs synthetic input). No ALL, no gpu_step.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
JOB=${JOB:-paper}
[[ "$JOB" == paper || "$JOB" == seeds ]] || { echo "JOB=$JOB: expected paper or seeds" >&2; exit 2; }
SEEDS=${SEEDS-0 1 2}
read -ra SEED_LIST <<< "${SEEDS//$'\n'/ }"
for s in ${SEED_LIST[@]+"${SEED_LIST[@]}"}; do
  [[ "$s" =~ ^[0-9]+$ ]] || { echo "SEEDS: expected whole numbers separated by spaces, got '$SEEDS'" >&2; exit 2; }
done
AT_ONCE=${AT_ONCE:-0}  # seeds job: 1 runs the peer baseline and every seed side by side on the one GPU
[[ "$AT_ONCE" == 0 || "$AT_ONCE" == 1 ]] || { echo "AT_ONCE: expected 0 or 1, got '$AT_ONCE'" >&2; exit 2; }
[[ "$AT_ONCE" == 0 || "$JOB" == seeds ]] || { echo "AT_ONCE=1: only the seeds job (JOB=seeds) runs side by side" >&2; exit 2; }
SIDE_RUNS=${SIDE_RUNS:-}  # seeds job with AT_ONCE=1: extra PBC runs, one process each, beside the seeds
SIDE_RUNS=${SIDE_RUNS//$'\n'/,}; SIDE_RUNS=${SIDE_RUNS//[[:space:]]/}  # newlines as commas, no blanks
[[ -z "$SIDE_RUNS" || ( "$JOB" == seeds && "$AT_ONCE" == 1 ) ]] \
  || { echo "SIDE_RUNS: only the seeds job with AT_ONCE=1 runs them (set JOB=seeds AT_ONCE=1)" >&2; exit 2; }
IFS=, read -ra SIDE_PARTS <<< "$SIDE_RUNS"
SIDE_LIST=()
for r in ${SIDE_PARTS[@]+"${SIDE_PARTS[@]}"}; do [[ -n "$r" ]] && SIDE_LIST+=("$r"); done  # no empty runs
for r in ${SIDE_LIST[@]+"${SIDE_LIST[@]}"}; do
  [[ "$r" =~ ^(flat|per-level|hierarchical):[A-Za-z0-9_.-]+(:[a-z_]+)?$ ]] \
    || { echo "SIDE_RUNS: expected METHOD:BACKBONE[:HEAD] separated by commas, got '$r' in '$SIDE_RUNS'" >&2; exit 2; }
done
SIDE_EPOCHS=${SIDE_EPOCHS:-}
[[ -z "$SIDE_EPOCHS" || "$SIDE_EPOCHS" =~ ^[1-9][0-9]*$ ]] || { echo "SIDE_EPOCHS: expected a whole number >= 1, got '$SIDE_EPOCHS'" >&2; exit 2; }
EPOCHS=${EPOCHS:-}  # epochs of every training run of both comparisons (default 40; 1 with --smoke)
[[ -z "$EPOCHS" || "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || { echo "EPOCHS: expected a whole number >= 1, got '$EPOCHS'" >&2; exit 2; }
USER_PBC_RUNS=${PBC_RUNS:-}  # a PBC_RUNS given by the caller wins in both jobs (not with --smoke)
# SLOW: the smoke run's time limits are SLOW times the GPU job's (SMOKE_SLOWER, default 4): a CPU shared with
# other work (the test suite's other worker) once took 56 s for a stage the GPU job gives 55
SLOW=1  # not S: the seed loops below use $S
(( SMOKE )) && SLOW=${SMOKE_SLOWER:-4}
[[ "$SLOW" =~ ^[1-9][0-9]*$ ]] || { echo "SMOKE_SLOWER: expected a whole number >= 1, got '$SLOW'" >&2; exit 2; }
if [[ "$JOB" == seeds ]]; then BUDGET=${BUDGET:-$(( 560 * SLOW ))}; else BUDGET=${BUDGET:-$(( 500 * SLOW ))}; fi
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "BUDGET: expected whole seconds, got '$BUDGET'" >&2; exit 2; }
ALL_STAGES="baseline compare_pbc compare_all4 gpu_step throughput"
[[ "$JOB" == seeds ]] && ALL_STAGES="baseline seeds throughput"  # the seeds job's own stages
read -ra STAGE_LIST <<< "$(echo ${STAGES:-$ALL_STAGES})"  # spaces, tabs or newlines between names
(( ${#STAGE_LIST[@]} )) || { echo "STAGES: no stage named; expected some of $ALL_STAGES" >&2; exit 2; }
for s in "${STAGE_LIST[@]}"; do
  [[ " $ALL_STAGES " == *" $s "* ]] || { echo "STAGES: unknown stage '$s'; expected some of $ALL_STAGES" >&2; exit 2; }
done
want() { [[ " ${STAGE_LIST[*]} " == *" $1 "* ]]; }  # is this stage of the paper job asked for?
PY=${PYTHON:-python3}
# the PBC pack (default pbc128_c70.npz, packed with --crop 0.7; PBC_PACK=NAME picks another in .carry); the peer baseline reads the same
# pack. Checked before anything starts in the background, so a missing pack costs no device time.
if (( SMOKE )); then
  PBC_PACK=""  # made below from a few real images
else
  PBC_PACK="$ROOT/.carry/${PBC_PACK:-pbc128_c70.npz}"
  [[ -f "$PBC_PACK" ]] || { echo "no pack $PBC_PACK: pack it first: bash benchmarks/prepare_carry.sh (see the header of $0)" >&2; exit 2; }
fi
# every setting is checked above: only now is anything created
OUT=${OUT:-$ROOT/runs/gpu_out}
mkdir -p "$OUT"
rm -f "$OUT/pbc_flat_baseline.json"  # a reused OUT must not show an earlier job's baseline as this job's
export OUT
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_run.XXXXXX")
exec > >(tee "$OUT/gpu_run.log") 2>&1
TEE_PID=$!
T0=$(date +%s)
STAGE_LOG="$WORK/stages.txt"
: > "$STAGE_LOG"

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# merge what the stages wrote into $OUT/results.{json,md} and pack the figures (cheap: run after each stage)
report() {
  $PY - "$STAGE_LOG" "$WORK/stages.json" <<'EOF2'
import json, sys
rows = [dict(zip(("name", "rc", "seconds"), l.split())) for l in open(sys.argv[1]) if l.strip()]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
EOF2
  $PY benchmarks/leukemia_gpu_report.py "$WORK" "$OUT" "$JOB" > "$WORK/summary.txt" 2>&1
  (cd "$WORK" && find pbc/figures all4/figures -name '*.png' 2>/dev/null | tar czf "$OUT/figures.tar.gz" -T - 2>/dev/null) || true
}
# and every 30 s (REPORT_EVERY) in the background, so even a job killed mid-stage leaves its finished runs in $OUT
# (it stops with the job: a job that dies another way than through finish must not leave it, and the tee
# behind it, holding the output open: the device call would then run on to its time limit)
# (its sleep holds none of the job's output: killing the loop would otherwise leave the sleep holding the
# tee's pipe open for up to REPORT_EVERY s more, at every job's end)
( while sleep "${REPORT_EVERY:-30}" </dev/null >/dev/null 2>&1 && kill -0 $$ 2>/dev/null; do report; done ) &
REPORTER=$!
trap 'kill "$REPORTER" 2>/dev/null' EXIT
# the end of either job: final report (also written after every stage, so a job cut short still returns
# its results), the work folder removed, the log flushed
finish() {
  kill "$REPORTER" 2>/dev/null; wait "$REPORTER" 2>/dev/null
  report
  cat "$WORK/summary.txt"
  echo "== done in $(( $(date +%s) - T0 ))s; files in $OUT:"; ls -la "$OUT"
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"   # checkpoints and logs of the runs (KEEP_WORK=1 keeps them)
  exec 1>&- 2>&-                                # let tee write the log's last lines before we return
  wait "$TEE_PID" 2>/dev/null || sleep 1
  exit 0
}
# stage NAME MAX_SECONDS RESERVE_FOR_LATER cmd...: run with a timeout of min(MAX, time left - RESERVE)
stage() {
  local name=$1 max=$2 reserve=$3; shift 3
  local t=$(( $(left) - reserve )); (( t > max )) && t=$max
  if (( t < 10 )); then echo "== $name: skipped (no time left)"; echo "$name skipped 0" >> "$STAGE_LOG"; return; fi
  echo "== $name (timeout ${t}s, $(left)s of the budget left): $*"
  local s=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$t" "$@"
  local rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - s ))s"
  echo "$name $rc $(( $(date +%s) - s ))" >> "$STAGE_LOG"
  [[ -n "${NO_REPORT:-}" ]] || report  # stages running side by side leave it to the reporter and finish
}
# side NAME cmd...: run a stage in the background, each output line prefixed with [NAME]
side() {
  local name=$1; shift
  ( NO_REPORT=1 "$@" 2>&1 | sed -u "s/^/[$name] /" ) &
}

if (( SMOKE )); then
  # tiny packs from a few real images per class (../shared/data), tiny models, one epoch, on CPU
  CARRY="$WORK/carry"; mkdir -p "$CARRY/tools"
  DATA=${HIERCLS_SHARED_DATA:-$ROOT/../shared/data}
  cp "$DATA/../tools/"*.py "$CARRY/tools/" 2>/dev/null || cp "$ROOT/.carry/tools/"*.py "$CARRY/tools/"
  if [[ -n "${SMOKE_PACKS:-}" && -f "$SMOKE_PACKS/pbc128.npz" && -f "$SMOKE_PACKS/all4_128.npz" ]]; then
    cp "$SMOKE_PACKS/pbc128.npz" "$SMOKE_PACKS/all4_128.npz" "$CARRY/"  # made once by the caller (the test suite)
  else
    bash benchmarks/smoke_packs.sh "$DATA" "$CARRY" pbc128.npz all4_128.npz
  fi
  PBC_PACK="$CARRY/pbc128.npz"
  BASE_ARGS=(--models test_resnet --epochs 1 --bs 16)
  PBC_RUNS=hierarchical:test_convnext,flat:test_convnext,per-level:test_resnet,hierarchical:test_vit
  [[ "$JOB" == seeds ]] && PBC_RUNS=flat:test_resnet,hierarchical:test_resnet,hierarchical:test_resnet:conditional
  ALL_RUNS=hierarchical:test_resnet,flat:test_resnet
  CMP_ARGS=(--epochs "${EPOCHS:-1}" --batch-size 16 --device cpu --also-decode crm,hf_optimal)
  SIDE_EPOCHS_DEFAULT=1
  TP_ARGS=(--backbone test_vit --steps 2 --warmup 1 --batch-size 8 --device cpu --chunks 1,2)
  STEP_ARGS=(--device cpu --model test_vit --batch 8 --steps 2 --warmup 1 --rounds 1)
else
  CARRY="$ROOT/.carry"
  BASE_ARGS=(--models resnet18 --epochs 40)
  PBC_RUNS=${PBC_RUNS:-hierarchical:resnet18,flat:resnet18,hierarchical:convnext_tiny,flat:convnext_tiny,hierarchical:vit_small_patch16_224,flat:vit_small_patch16_224,per-level:resnet18}
  [[ "$JOB" == seeds ]] && PBC_RUNS=${USER_PBC_RUNS:-flat:resnet18,hierarchical:resnet18,hierarchical:resnet18:conditional}
  ALL_RUNS=hierarchical:resnet18,flat:resnet18,hierarchical:vit_small_patch16_224,flat:vit_small_patch16_224
  CMP_ARGS=(--epochs "${EPOCHS:-40}" --batch-size 256 --also-decode crm,hf_optimal)  # readouts cost no training
  SIDE_EPOCHS_DEFAULT=40
  TP_ARGS=(--backbone vit_small_patch16_224 --sizes 128,224 --steps 40 --warmup 8 --chunks 1,8)
  STEP_ARGS=(--model vit_small_patch16_224 convnext_tiny)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
# recipe flags for every training run of both comparisons (e.g. TRAIN_ARGS="--tta d4"; not --crop: a
# pack keeps its own); the peer baseline tool takes none of them
TRAIN_ARGS=${TRAIN_ARGS:-}
echo "== job $JOB; PBC pack $PBC_PACK; train args: ${TRAIN_ARGS:-none}"

# 1. the peer baseline, same job (writes $OUT/pbc_flat_baseline.json)
BASELINE=(baseline $(( 75 * SLOW )) $(( 400 * SLOW )) $PY "$CARRY/tools/flat_baseline_gpu_data.py" "$PBC_PACK" "${BASE_ARGS[@]}")
[[ "$JOB" == seeds && "$AT_ONCE" == 1 ]] || { want baseline && stage "${BASELINE[@]}"; }
if [[ "$JOB" == seeds ]]; then
  want seeds || SEED_LIST=()  # STAGES without seeds: no comparison, readout or pooling
  # 2'. one comparison per seed (same split: the split seed is fixed), each read out again with d4 TTA.
  shopt -s nullglob
  (( ${#SEED_LIST[@]} )) || echo "== no seed to run (SEEDS is empty, or STAGES leaves out seeds)"
  # seconds kept for the closing stages (two aggregates, the profiled throughput check) and for each seed's
  # d4 readout; measured on an H200 in the eighth session: a readout of two ResNet-18 checkpoints took about
  # 25 s (20 s was too short) and the profiled throughput check over 45 s (cut at 45 s; --chunks 1,8 adds more)
  CLOSING=$(( 125 * SLOW )) TTA_S=$(( 40 * SLOW ))
  compare_seed() {  # compare_seed SEED TIMEOUT RESERVE
    local D=$(( $2 - 10 )); (( D < 1 )) && D=1
    stage "compare_pbc_seed$1" "$2" "$3" $PY -m examples.leukemia.compare --pack "$PBC_PACK" \
      --runs "$PBC_RUNS" "${CMP_ARGS[@]}" --seed "$1" --figures none --train-args="$TRAIN_ARGS" --deadline "$D" \
      --title "PBC (real images, from scratch), seed $1" --out "$WORK/pbc_seeds/seed$1"
  }
  tta_seed() {  # tta_seed SEED: the seed's finished runs (a run cut short has a folder but no best.json)
    local finished=("$WORK/pbc_seeds/seed$1"/runs/*/best.json)
    if (( ${#finished[@]} )); then
      stage "tta_seed$1" "$TTA_S" "$CLOSING" $PY -m examples.leukemia.evaluate "${finished[@]}" \
        --pack "$PBC_PACK" --tta d4 --no-figures --out "$WORK/pbc_seeds_tta/seed$1"
    else
      echo "== tta_seed$1: skipped (no finished run)"; echo "tta_seed$1 skipped 0" >> "$STAGE_LOG"
    fi
  }
  if [[ "$AT_ONCE" == 1 ]]; then
    # AT_ONCE=1: the baseline and every seed's comparison side by side. A ResNet-18 at 128 px leaves an
    # H200 mostly idle (launch-bound: 40 flat epochs in 19 s), so processes side by side fill its gaps.
    # Each gets the time left but the readouts' and the closing stages'; img/s figures are then shared-GPU
    # ones. The readouts follow, one seed after another.
    T=$(( $(left) - CLOSING - TTA_S * ${#SEED_LIST[@]} ))
    side_pids=()
    want baseline && { side baseline stage "${BASELINE[@]}"; side_pids+=($!); }
    for S in ${SEED_LIST[@]+"${SEED_LIST[@]}"}; do side "seed$S" compare_seed "$S" "$T" 0; side_pids+=($!); done
    i=0
    for R in ${SIDE_LIST[@]+"${SIDE_LIST[@]}"}; do
      i=$(( i + 1 ))
      side "side$i" stage "side$i" "$T" 0 $PY -m examples.leukemia.compare --pack "$PBC_PACK" --runs "$R" \
        "${CMP_ARGS[@]}" --epochs "${SIDE_EPOCHS:-$SIDE_EPOCHS_DEFAULT}" --seed 0 --figures none --train-args="$TRAIN_ARGS" \
        --title "PBC (real images, from scratch), side run $i: $R" --out "$WORK/pbc_side/side$i"
      side_pids+=($!)
    done
    (( ${#side_pids[@]} )) && wait "${side_pids[@]}"  # not a bare wait: the reporter runs until finish
    report
    for S in ${SEED_LIST[@]+"${SEED_LIST[@]}"}; do tta_seed "$S"; done
  else
    # Each seed still to run gets an equal share of the time left after the closing stages (CLOSING s),
    # its compare that share minus the TTA readout's, and compare's --deadline inside that timeout, so a
    # run that cannot finish is skipped whole (flat, the reference of the pairs, goes first, so a skip
    # drops a hierarchical variant, not the pairs).
    CAP=$(( 180 * ${EPOCHS:-40} / 40 )); (( CAP < 180 )) && CAP=180; CAP=$(( CAP * SLOW ))  # a longer schedule may take more of a slot
    i=0
    for S in ${SEED_LIST[@]+"${SEED_LIST[@]}"}; do
      slot=$(( ($(left) - CLOSING) / (${#SEED_LIST[@]} - i) )); i=$(( i + 1 ))
      T=$(( slot - TTA_S )); (( T > CAP )) && T=$CAP
      compare_seed "$S" "$T" "$CLOSING"
      tta_seed "$S"
    done
  fi
  for kind in pbc_seeds pbc_seeds_tta; do
    pooled=("$WORK/$kind"/seed*/results.json)
    if (( ${#pooled[@]} )); then
      stage "aggregate_$kind" $(( 15 * SLOW )) $(( 45 * SLOW )) $PY -m examples.leukemia.aggregate "${pooled[@]}" --out "$WORK/$kind"
    else
      echo "== aggregate_$kind: skipped (no results)"; echo "aggregate_$kind skipped 0" >> "$STAGE_LOG"
    fi
  done
  shopt -u nullglob
  want throughput && stage throughput $(( 90 * SLOW )) 0 $PY benchmarks/leukemia_throughput.py --pack "$PBC_PACK" "${TP_ARGS[@]}" --profile \
    --out "$WORK/throughput.json"
  finish
fi
# 2. the paper's comparison on PBC; --deadline skips runs that would not finish in time.
# It keeps back the most the later stages asked for can take (their timeouts below), and no more.
R2=$(( 5 * SLOW ))
want compare_all4 && R2=$(( R2 + 55 * SLOW ))
want gpu_step && R2=$(( R2 + 60 * SLOW ))
want throughput && R2=$(( R2 + 55 * SLOW ))
T2=$(( $(left) - R2 - 5 ))
D2=$(( T2 - 15 )); (( D2 < 1 )) && D2=1  # compare refuses a deadline <= 0: 1 s skips every run, as before
want compare_pbc && stage compare_pbc "$T2" "$R2" $PY -m examples.leukemia.compare --pack "$PBC_PACK" --runs "$PBC_RUNS" \
  "${CMP_ARGS[@]}" --train-args="$TRAIN_ARGS" --deadline "$D2" --baseline-json "$OUT/pbc_flat_baseline.json" \
  --title "PBC (real images, from scratch)" --out "$WORK/pbc"
# 3. ALL: saturated by any model (see BENCHMARKS.md), fewer runs
want compare_all4 && stage compare_all4 $(( 55 * SLOW )) $(( 115 * SLOW )) $PY -m examples.leukemia.compare --pack "$CARRY/all4_128.npz" \
  --runs "$ALL_RUNS" "${CMP_ARGS[@]}" --train-args="$TRAIN_ARGS" --deadline $(( 50 * SLOW )) \
  --title "ALL 4-class (real images, from scratch)" --out "$WORK/all4"
# 4. head overhead: benchmarks/gpu_step.py (writes $OUT/gpu_step.json after every model, so a timeout keeps the
# models it finished, marked "complete": false; OUT points at the work folder here)
want gpu_step && stage gpu_step $(( 60 * SLOW )) $(( 55 * SLOW )) env OUT="$WORK" $PY benchmarks/gpu_step.py "${STEP_ARGS[@]}"
# 5. feeding the GPU: a real-data epoch vs synthetic input
want throughput && stage throughput $(( 55 * SLOW )) $(( 5 * SLOW )) $PY benchmarks/leukemia_throughput.py --pack "$PBC_PACK" "${TP_ARGS[@]}" \
  --out "$WORK/throughput.json"

finish
