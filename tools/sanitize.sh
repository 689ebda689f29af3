#!/usr/bin/env bash
# Builds fixq's extension with AddressSanitizer + UndefinedBehaviorSanitizer (in a scratch copy of
# the tree, so the normal in-place build is untouched) and runs the test suite under it.
# Python itself is not instrumented, so libasan/libubsan are LD_PRELOADed.  Any ASan report or UB
# aborts the run with a non-zero exit.
#
#   tools/sanitize.sh                 # whole suite
#   tools/sanitize.sh tests/test_arith.py -k golden
#
# Environment: PYTHON (default: python), CC (default: gcc).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
CC=${CC:-gcc}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fixq-sanitize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK")
cd "$WORK"

SAN="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
echo "sanitize: building in $WORK with $SAN" >&2
CC="$CC" CFLAGS="$SAN -g" LDFLAGS="$SAN" "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log" >&2; exit 1; }
SYMS=$(nm -D src/fixq/_core*.so)
grep -q __asan_report <<<"$SYMS" || { echo "sanitize: extension is not instrumented" >&2; exit 1; }
grep -q __ubsan_handle <<<"$SYMS" || { echo "sanitize: extension has no UBSan checks" >&2; exit 1; }

PRELOAD="$("$CC" -print-file-name=libasan.so) $("$CC" -print-file-name=libubsan.so)"
# Subprocesses (python, make, cc started by tests) inherit the preload; strict_string_checks would flag
# GNU make's own strndup use, so it stays off.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$WORK/src"
export PYTHONMALLOC=malloc   # let ASan see every Python allocation too
export FIXQ_SANITIZED=1      # timing bounds in the tests allow for the slower allocator
if [ $# -eq 0 ]; then set -- tests; fi
LD_PRELOAD="$PRELOAD" "$PY" -m pytest -q -p no:cacheprovider "$@"
