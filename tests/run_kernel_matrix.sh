#!/usr/bin/env bash
# The numeric tests (pytest -m numeric) under other CPU kernels: fp32 round-off depends on which kernels run (vector
# width, oneDNN's algorithm choice, thread count), and the tolerance policy (tests/helpers.py) must hold on every
# machine of our kind, not only on this one. Not part of `make test` (about 6 x 2 min); run it before changing a
# tolerance or a numeric fast path, and quote its table.
#   bash tests/run_kernel_matrix.sh            # all settings
#   PY=python bash tests/run_kernel_matrix.sh  # another interpreter (default .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
settings=("native" "ATEN_CPU_CAPABILITY=default" "ATEN_CPU_CAPABILITY=avx2")
grep -qw avx512f /proc/cpuinfo 2>/dev/null && settings+=("ATEN_CPU_CAPABILITY=avx512")
settings+=("OMP_NUM_THREADS=1" "CUTLIGHT_TEST_MKLDNN=0")
log=$(mktemp -d)
printf '%-30s %-28s %8s %8s %8s %8s\n' setting kernels passed failed skipped seconds
status=0
for s in "${settings[@]}"; do
  envs=()
  [ "$s" != native ] && envs=("$s")
  start=$(date +%s)
  env "${envs[@]}" "$PY" -m pytest -q -m numeric -p no:cacheprovider > "$log/$s.txt" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  secs=$(( $(date +%s) - start ))
  line=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$log/$s.txt" | tail -1)
  count() { echo "$line" | grep -oE "[0-9]+ $1" | grep -oE '[0-9]+' || echo 0; }
  kern=$(env "${envs[@]}" "$PY" -c "import os, torch
torch.backends.mkldnn.enabled = os.environ.get('CUTLIGHT_TEST_MKLDNN', '1') != '0'
print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), 'threads, oneDNN',
      'on' if torch.backends.mkldnn.enabled else 'off')" 2>/dev/null)
  printf '%-30s %-28s %8s %8s %8s %8s\n' "$s" "$kern" "$(count passed)" "$(count failed)" "$(count skipped)" "$secs"
  [ $rc -ne 0 ] && grep -E '^FAILED' "$log/$s.txt" | sed 's/^/    /'
done
echo "logs: $log"
exit $status
