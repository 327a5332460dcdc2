#!/usr/bin/env bash
# The GPU validation protocol (shared/GPU.md) in stages, one device command each:
#
#   tools/gpu_validate.sh build    # build for the visible GPU, all cores; then the smoke test
#   tools/gpu_validate.sh tests    # the CUDA test files, a timeout per test, no skips allowed
#   tools/gpu_validate.sh bench    # rnnkit against cuDNN, quick mode
#   tools/gpu_validate.sh sanitize # memcheck, racecheck, synccheck on the smoke cases
#   tools/gpu_validate.sh all      # the four in order (on a machine without a time limit)
#
# Every stage writes its log to $OUT/<stage>.log as it goes and appends one verdict line,
# with its wall time, to $OUT/summary.txt, so a stage that is killed still reports how far it
# got. $OUT defaults to ./gpu-run. Each step runs under its own `timeout`, sized so that the
# stage ends before the device command's limit (the seconds after each stage name below; the
# budget in GPU.md: build <= 4 min, tests <= 6, bench <= 5, sanitize <= 2).
#
# Without a GPU (or with RNNKIT_GPU_DRY=1) every stage is a dry run: no build (the
# extension built here is used), the smoke test on the CPU, the CUDA test files (which skip),
# the benchmarks' argument parsing only, no sanitizer. It shows that the stages run and how
# long their CPU parts take (all four in about 15 s on a 2-core CPU machine).
#
# Expected on the lent H100/H200 machine (estimates until the first run; a fresh machine
# also takes a minute or more to start): build 2-3 min for one architecture on 16 cores
# (CI's build for sm_80 and sm_90 on 2 cores takes about 4), smoke under 30 s with the
# CUDA context; tests 2-4 min (about 450 tests, most of them small); bench 1-2 min in
# quick mode; sanitize 1-2 min (the smoke cases run 10-100x slower under the tools).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-run}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
stage=${1:-}

# Dry only when asked to, or when there is no GPU at all: a GPU that torch cannot see
# (a CPU build of torch, a driver mismatch) is a failure, not a dry run that reads "ok".
if [ -n "${RNNKIT_GPU_DRY:-}" ] && [ "${RNNKIT_GPU_DRY}" != 0 ]; then
  dry=1
elif $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  dry=0
elif nvidia-smi -L > /dev/null 2>&1; then
  echo "gpu_validate: nvidia-smi sees a GPU but torch does not:" | tee -a "$OUT/summary.txt"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 \
    | tee -a "$OUT/summary.txt"
  exit 1
else
  dry=1
fi
tag=""
[ "$dry" = 1 ] && tag=" (dry run)"

# run NAME SECONDS CMD...: CMD under `timeout`, its output appended to the stage's log.
run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (timeout ${limit} s): $*" >> "$log"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  local verdict="ok"
  if [ $rc -eq 124 ]; then
    verdict="TIMED OUT"
  elif [ $rc -eq 137 ]; then
    verdict="KILLED (past the timeout's grace, or out of memory)"
  elif [ $rc -ne 0 ]; then
    verdict="FAILED (exit $rc)"
  fi
  if [ "$name" = tests ]; then  # pytest's summary line: the counts, skips included
    local counts
    counts=$(grep -E "^(=+ )?[0-9]+ (passed|failed)" "$log" | tail -1 | tr -d '=' | sed 's/^ *//')
    [ -n "$counts" ] && verdict="$verdict: $counts"
  fi
  echo "$stage/$name: $verdict, $((SECONDS - t0)) s$tag" | tee -a "$OUT/summary.txt"
  return $rc
}

machine() {
  {
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
      || echo "no nvidia-smi"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version())"
    git rev-parse --short HEAD 2>/dev/null || true
    echo "dry run: $dry"
  } > "$OUT/machine.txt" 2>&1
}

stage_build() {
  machine
  if [ "$dry" = 0 ]; then
    local arch
    arch=$($PY -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}.{p[1]}')")
    run build 200 env MAX_JOBS="$(nproc)" TORCH_CUDA_ARCH_LIST="$arch" \
      $PY -m pip install --no-build-isolation --no-deps -e . || return 1
  fi
  run smoke 60 $PY tools/gpu_smoke.py
}

# The CUDA kernels are switched on explicitly (they are not the default until this
# protocol has passed), and a CUDA test that would skip fails instead.
stage_tests() {
  local files="tests/test_cuda.py tests/test_cuda_cells.py tests/test_cuda_registration.py
    tests/test_persistent_cuda.py tests/test_persistent_plan.py tests/test_persistent_fakes.py"
  local per_test=()
  # The thread method: a test stuck in a CUDA synchronisation never sees a signal.
  $PY -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout 60 --timeout-method=thread)
  if [ "$dry" = 0 ]; then
    run tests 330 env RNNKIT_CUDA_KERNELS=1 RNNKIT_EXPECT_CUDA=1 \
      $PY -m pytest -x -q -rs "${per_test[@]}" $files
  else
    run tests 330 $PY -m pytest -x -q -rs "${per_test[@]}" $files
  fi
}

stage_bench() {
  local rc=0
  if [ "$dry" = 0 ]; then
    run gpu_compare 170 $PY benchmarks/gpu_compare.py --quick --out "$OUT/gpu_compare.md" \
      || rc=1
    run persistent_compare 110 sh -c \
      "$PY benchmarks/persistent_compare.py --quick > '$OUT/persistent_compare.md'" || rc=1
  else
    run gpu_compare 30 $PY benchmarks/gpu_compare.py --help || rc=1
    run persistent_compare 30 $PY benchmarks/persistent_compare.py --help || rc=1
  fi
  return $rc
}

stage_sanitize() {
  if [ "$dry" = 1 ]; then
    echo "$stage: skipped$tag" | tee -a "$OUT/summary.txt"
    return 0
  fi
  local cs
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -z "$cs" ]; then
    echo "$stage: skipped (no compute-sanitizer)" | tee -a "$OUT/summary.txt"
    return 0
  fi
  local rc=0
  run memcheck 40 "$cs" --tool memcheck --error-exitcode 1 $PY tools/gpu_smoke.py || rc=1
  # The persistent kernels synchronise across blocks: races and barrier misuse are
  # what they can get wrong that memcheck does not see.
  for tool in racecheck synccheck; do
    run $tool 40 "$cs" --tool $tool --error-exitcode 1 $PY tools/gpu_smoke.py --only persistent \
      || rc=1
  done
  return $rc
}

case "$stage" in
  build | tests | bench | sanitize)
    log="$OUT/$stage.log"
    : > "$log"
    "stage_$stage"
    ;;
  all)
    rc=0
    for stage in build tests bench sanitize; do
      log="$OUT/$stage.log"
      : > "$log"
      if ! "stage_$stage"; then
        rc=1
        [ "$stage" = build ] && break  # nothing after it can run
      fi
    done
    exit $rc
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
