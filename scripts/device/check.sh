#!/usr/bin/env bash
# On the device machine (one NVIDIA H200, no network): install the carried wheels, run the GPU
# tests (pytest marker `gpu`) and the benchmarks, on the snapshot in .devtree/ (prepare.sh).
#
#   run(command="bash .devtree/scripts/device/check.sh", carry=[".whl", ".devtree"], timeout_s=480)
#
# Writes to $OUT (7 files): summary.txt, env.log, gpu_tests.log, gpu_tests.xml, bench_gpu.log,
# bench_cpu.log, gpu_util.csv; prints summary.txt last. Every part has its own `timeout`, and
# all of them share one budget (BUDGET seconds, default 420), so the whole stays inside it.
#
# The project is not pip-installed there (that would resolve torch==2.13.0): the image's
# python3 and its torch (2.11.0+cu130 as KINDS.md saw it) run the code with PYTHONPATH =
# the snapshot + /tmp/site (the carried wheels).
#
# Run here for a dry run on the CPU: OUT=/tmp/out REQUIRE_CUDA=0 bash .devtree/scripts/device/check.sh
#
# Environment: WHL (./.whl), SITE (/tmp/site), OUT (/tmp/layerlens-device-out when unset),
# PY (python3), BUDGET (420), REQUIRE_CUDA (1: stop after the environment check when torch
# sees no CUDA device), BENCH_GPU (full_report), BENCH_CPU (the CPU-only benchmarks, run after
# it while the budget lasts).
set -u -o pipefail
export PYTHONUNBUFFERED=1

TREE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WHL=${WHL:-$PWD/.whl}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/layerlens-device-out}
PY=${PY:-python3}
BUDGET=${BUDGET:-420}
REQUIRE_CUDA=${REQUIRE_CUDA:-1}
# full_report is the one benchmark that runs on the GPU (AnalyzeOptions.device "auto" -> cuda);
# the others pass device="cpu" and show CPU figures on 16 cores. service_api is left out: it
# needs the whole service stack (FastAPI, uvicorn, Celery, SQLAlchemy, boto3, ...: about 25
# more wheels) and measures HTTP latency on the CPU.
BENCH_GPU=${BENCH_GPU-full_report}
BENCH_CPU=${BENCH_CPU-capture_overhead activation_maximization mutual_information linear_probe projection}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
START=$SECONDS
STATUS=0

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# cap N: N seconds, or what is left of the budget when that is less
cap() { local want=$1 rest; rest=$(left); [ "$rest" -lt "$want" ] && want=$rest; echo "$want"; }

# part NAME SECONDS LOG CMD...: CMD under `timeout`, output appended to LOG and printed
part() {
    local name=$1 want=$2 log=$3 t0 rc limit
    shift 3
    limit=$(cap "$want")
    if [ "$limit" -lt 10 ]; then
        say "[$name] SKIPPED: budget spent ($(left) s left)"
        STATUS=1
        return 124
    fi
    echo "=== $name (limit ${limit}s, $(left)s of the budget left)" | tee -a "$log"
    t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        say "[$name] TIMED OUT after $((SECONDS - t0))s (limit ${limit}s)"
        STATUS=1
    else
        say "[$name] rc=$rc in $((SECONDS - t0))s"
        [ "$rc" = 0 ] || STATUS=1
    fi
    return "$rc"
}

: >"$SUMMARY"
say "layerlens device check: $(cat "$TREE/DEVTREE_COMMIT" 2>/dev/null || echo 'no DEVTREE_COMMIT')"
say "host $(hostname), $(nproc) cores, $(date -u +%FT%TZ), budget ${BUDGET}s"

# 1. the carried wheels
part install 90 "$OUT/env.log" bash -c "rm -rf '$SITE' && $PY -m pip install -q --no-index \
    --no-deps --no-compile --no-cache-dir --upgrade --target '$SITE' '$WHL'/*.whl \
    && ls '$SITE'" || { say "install failed: see env.log"; cat "$SUMMARY"; exit 2; }
export PYTHONPATH="$TREE:$SITE${PYTHONPATH:+:$PYTHONPATH}"
cd "$TREE" || exit 2

# 2. what is there: GPU, python, torch, packages; the carried packages import
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem \
    --format=csv 2>&1 | tee -a "$OUT/env.log" | sed 's/^/nvidia-smi: /' >>"$SUMMARY"
part environment 120 "$OUT/env.log" "$PY" - <<'EOF'
import importlib, importlib.metadata as md, platform, sys, time
import torch
line = lambda *a: print("env:", *a, flush=True)
line("python", platform.python_version(), sys.executable)
line("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    line("gpu", p.name, f"cc {p.major}.{p.minor}", f"{p.total_memory / 2**30:.0f} GiB",
         f"{p.multi_processor_count} SMs", "cudnn", torch.backends.cudnn.version(),
         "tf32 matmul", torch.backends.cuda.matmul.allow_tf32, "tf32 cudnn",
         torch.backends.cudnn.allow_tf32)
    x = torch.randn(1024, 1024, device="cuda", dtype=torch.float64)
    error = ((x @ x).cpu() - x.cpu() @ x.cpu()).abs().max().item()
    line(f"cuda float64 matmul vs cpu: max |diff| {error:.1e}")
import onnxruntime
line("onnxruntime providers", onnxruntime.get_available_providers())
names = ["numpy", "scipy", "scikit-learn", "onnx", "onnxruntime", "numba", "llvmlite",
         "matplotlib", "jinja2", "protobuf", "pytest", "pytest-timeout", "threadpoolctl",
         "pydantic", "pydantic-core", "typing-extensions", "openTSNE", "umap-learn", "pynndescent"]
versions = []
for name in names:
    try:
        versions.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        versions.append(f"{name} MISSING")
line("; ".join(versions))
for module in ["pydantic", "openTSNE", "pynndescent", "umap", "layerlens.analyze",
               "layerlens.analyses.projection"]:
    t = time.perf_counter()
    mod = importlib.import_module(module)
    line(f"import {module} ok ({time.perf_counter() - t:.1f} s) from {mod.__file__}")
EOF
grep -h '^env:' "$OUT/env.log" >>"$SUMMARY"
if ! grep -q '^env: torch .* available True' "$OUT/env.log"; then
    if [ "$REQUIRE_CUDA" = 1 ]; then
        say "NO CUDA: torch sees no CUDA device here; stopping before the GPU tests and benchmarks"
        cat "$SUMMARY"
        exit 3
    fi
    say "no CUDA device (REQUIRE_CUDA=0): the gpu tests will skip, the benchmarks run on the CPU"
fi

# 3. the GPU tests: every test file with a gpu mark (only those files are collected: the
# others need the service stack, which does not travel)
mapfile -t gpu_files < <(grep -rlE 'mark\.gpu' tests --include='*.py' | sort)
say "gpu test files: ${gpu_files[*]:-none}"
if [ "${#gpu_files[@]}" = 0 ]; then
    say "[gpu-tests] NO test file with a gpu mark in the snapshot"
    STATUS=1
else
    part gpu-tests 150 "$OUT/gpu_tests.log" "$PY" -m pytest -m gpu -p no:cacheprovider -v -ra \
        --timeout 120 --durations=10 --junitxml="$OUT/gpu_tests.xml" "${gpu_files[@]}"
fi
grep -E '^(PASSED|FAILED|ERROR|SKIPPED)|^=+ .*(passed|failed|error|skipped|deselected).* =+$' \
    "$OUT/gpu_tests.log" | sed 's/^/gpu-tests: /' >>"$SUMMARY"
grep -E '::.* (PASSED|FAILED|ERROR|SKIPPED)' "$OUT/gpu_tests.log" | sed 's/^/gpu-tests: /' \
    >>"$SUMMARY"
# on the device every gpu test must run: a skip there (no CUDA seen by the test) is a failure
"$PY" - "$OUT/gpu_tests.xml" "$REQUIRE_CUDA" <<'EOF' | tee -a "$SUMMARY" || STATUS=1
import sys
import xml.etree.ElementTree as ET
try:
    suite = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as error:
    print(f"gpu-tests: no junit report ({error})")
    sys.exit(1)
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
n = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
print(f"gpu-tests: {passed} passed, {n['failures']} failed, {n['errors']} errors, "
      f"{n['skipped']} skipped of {n['tests']}")
if n["failures"] or n["errors"] or not n["tests"] or (sys.argv[2] == "1" and n["skipped"]):
    print("gpu-tests: NOT ok")
    sys.exit(1)
EOF

# 4. the benchmarks, the GPU one first, each alone so that one overrun costs only itself;
# nvidia-smi samples the GPU every 0.5 s meanwhile (proof that the GPU one used the GPU)
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm,power.draw \
    --format=csv -lms 500 >"$OUT/gpu_util.csv" 2>&1 &
SAMPLER=$!
for name in $BENCH_GPU; do
    echo "--- gpu sampling: benchmark $name starts $(date -u +%T)" >>"$OUT/gpu_util.csv"
    part "bench $name" 240 "$OUT/bench_gpu.log" "$PY" -m benchmarks "$name"
    echo "--- gpu sampling: benchmark $name ends $(date -u +%T)" >>"$OUT/gpu_util.csv"
done
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
"$PY" - "$OUT/gpu_util.csv" <<'EOF' | tee -a "$SUMMARY"
import sys
util, mem = [], []
for row in open(sys.argv[1]):
    cells = [c.strip() for c in row.split(",")]
    try:
        util.append(float(cells[1].split()[0]))
        mem.append(float(cells[2].split()[0]))
    except (IndexError, ValueError):
        pass
if util:
    print(f"gpu during {len(util)} samples: utilization max {max(util):.0f}% mean "
          f"{sum(util) / len(util):.0f}%, memory used max {max(mem):.0f} MiB")
else:
    print("gpu sampling: no readings (see gpu_util.csv)")
EOF
for name in $BENCH_CPU; do
    part "bench $name" 120 "$OUT/bench_cpu.log" "$PY" -m benchmarks "$name"
done

# 5. the figures: the benchmarks' own tables, then the summary printed last
{
    echo
    echo "== benchmark output (full_report's header says CPU, but it runs with device auto:"
    echo "   cuda here; see the gpu sampling line above)"
    grep -hv '^===' "$OUT/bench_gpu.log" "$OUT/bench_cpu.log" 2>/dev/null \
        | grep -vE '^\s*$|Warning|warn\(|^\s+(warnings|from|import) '
    echo
    echo "elapsed $((SECONDS - START))s of ${BUDGET}s; overall $([ $STATUS = 0 ] && echo ok || echo 'NOT ok')"
} >>"$SUMMARY"
echo
echo "================ summary ================"
cat "$SUMMARY"
exit "$STATUS"
