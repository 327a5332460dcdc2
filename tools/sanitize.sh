#!/usr/bin/env bash
# Builds the CPU extension with AddressSanitizer and UndefinedBehaviorSanitizer in
# a copy of the sources (build/sanitize/, so the normal in-place build is left
# alone) and runs the CPU kernel tests against it.
#
#   tools/sanitize.sh [pytest args...]      PYTHON=/path/to/python to pick the interpreter
#
# Python itself is not instrumented, so the ASan runtime has to be preloaded, and
# leak detection is off (the interpreter's own allocations at exit would drown
# any report). Any ASan or UBSan finding aborts the run with a non-zero status;
# pytest captures at the Python level only, so the report reaches the terminal.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python}"
WORK="$ROOT/build/sanitize"
CXX="${CXX:-c++}"

rm -rf "$WORK"
mkdir -p "$WORK"
cp -r "$ROOT/csrc" "$ROOT/rnnkit" "$ROOT/tests" "$ROOT/setup.py" "$ROOT/pyproject.toml" "$WORK/"
find "$WORK/rnnkit" -name '*.so' -delete

echo "sanitize: building in $WORK" >&2
(cd "$WORK" && RNNKIT_CUDA=0 RNNKIT_SANITIZE=address,undefined \
  "$PYTHON" setup.py -q build_ext --inplace --build-temp "$WORK/tmp" >"$WORK/build.log" 2>&1) || {
  tail -50 "$WORK/build.log" >&2
  exit 1
}

ASAN_LIB="$("$CXX" -print-file-name=libasan.so)"
UBSAN_LIB="$("$CXX" -print-file-name=libubsan.so)"
[ -f "$ASAN_LIB" ] || { echo "sanitize: libasan.so not found (got '$ASAN_LIB')" >&2; exit 1; }

echo "sanitize: running the CPU kernel tests with $ASAN_LIB preloaded" >&2
cd "$WORK"
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
PYTHONPATH="$WORK" \
  "$PYTHON" -c "
import rnnkit, rnnkit._extension as e
assert e.loaded(), e.LOAD_ERROR
assert rnnkit.__file__.startswith('$WORK/'), rnnkit.__file__
print('sanitize: testing', e.__file__.replace('_extension.py', '_C'), '(instrumented)')
"
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
PYTHONPATH="$WORK" \
  "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys tests/test_cpu_kernels.py "$@"
