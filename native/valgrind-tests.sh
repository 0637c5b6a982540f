#!/usr/bin/env bash
# Runs tests against walq's C extension under valgrind memcheck and fails on
# any memory error in walq's own code: a read of uninitialised memory
# ("Conditional jump or move depends on uninitialised value(s)", "Use of
# uninitialised value"), an invalid read or write, a bad free.
#
#   native/valgrind-tests.sh                       # the default set below
#   native/valgrind-tests.sh tests/test_foo.py -k x  # any pytest arguments
#
# Needs valgrind (apt-get install valgrind) and the extension built in this
# tree (walq/_native*.so, e.g. by pip install -e .): PYTHONPATH points here.  Python's allocator is switched off (PYTHONMALLOC=
# malloc) so that memcheck sees every allocation; native/valgrind.supp hides
# CPython's own uninitialised-value noise (errors whose innermost frame is
# in libpython) and nothing else.  Tests that start subprocesses are run,
# but only the pytest process is checked (--trace-children=no).  WALQ_VALGRIND=1
# tells tests/conftest.py to drop hypothesis's deadlines (and run 10 examples).  Expect
# 30-60x the normal run time: the default set took 4.5 minutes on 2 vCPUs.
# Exit status: 0 clean, 1 tests failed, 2 memcheck found errors (they are
# printed, walq's first), 3 usage.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v valgrind >/dev/null || { echo "valgrind-tests: valgrind not found" >&2; exit 3; }
# The interpreter itself, not a launcher script (pyenv shims are bash).
py=$(python3 -c 'import sys; print(sys.executable)')
if [ $# -eq 0 ]; then
    # Every framing path, the frame grammar, and a standard queue's native index.
    set -- tests/test_framing_sizes.py tests/test_log_format.py tests/test_queue_standard.py
fi
log=$(mktemp /tmp/walq-valgrind.XXXXXX.log)

WALQ_VALGRIND=1 PYTHONMALLOC=malloc PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
valgrind --tool=memcheck --error-exitcode=99 --trace-children=no \
    --suppressions="$root/native/valgrind.supp" --num-callers=30 \
    --leak-check=no --log-file="$log" \
    "$py" -m pytest -q -p no:cacheprovider "$@"
rc=$?

# Every unsuppressed error, walq's (a frame in the extension) marked.
"$py" - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = [b for b in re.split(r"\n==\d+== \n", text) if re.search(r"==\d+== (Conditional|Use of|Invalid|Syscall|Mismatched|Source and|Argument)", b)]
ours = [b for b in blocks if re.search(r"_native\.cpython|walq\.c|qindex\.c|queue_records\.c|xxhash\.h", b)]
for b in ours + [b for b in blocks if b not in ours]:
    print(("WALQ " if b in ours else "OTHER ") + "-" * 60)
    print(b)
summary = re.findall(r"ERROR SUMMARY: .*", text)
print(f"valgrind-tests: {len(ours)} error context(s) in walq's code, {len(blocks) - len(ours)} elsewhere; "
      + (summary[-1] if summary else "no summary"))
PY
echo "valgrind-tests: full log in $log"
if [ "$rc" -eq 99 ]; then
    exit 2
elif [ "$rc" -ne 0 ]; then
    exit 1
fi
exit 0
