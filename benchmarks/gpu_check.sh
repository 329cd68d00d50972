#!/usr/bin/env bash
# The scale issue's GPU figures in two commands on a GPU machine that has PyTorch
# but no internet (benchmarks/RESULTS.md, "GPU").
#
# Prepare where pip reaches its index (3 minutes; writes .bundle/site.tar.xz, 43 MiB):
#   .venv/bin/python benchmarks/offline_bundle.py --have benchmarks/gpu_image_packages.txt
# Then on the GPU machine, in the repository root, with .bundle/ copied there:
#   bash benchmarks/gpu_check.sh [GRID_SECONDS]
#       the 54-trial VAR grid (medium, ResNet50 at 224 px) from an empty cache, stopped
#       gracefully after GRID_SECONDS (default 480; the stop itself takes about 20 s)
#   bash benchmarks/gpu_check.sh kernels [RESUME_SECONDS]
#       the kernels (about 2 minutes, at most 4); then, if the grid was stopped, it continues
#       for at most RESUME_SECONDS (default 0: not at all). Same machine: the grid lives in /tmp.
# A lease of 15 device minutes holds the machine's start (1 to 2 minutes), the first command
# (about 8.5 minutes) and the kernels: no time is left to resume the grid in the same lease.
# Markdown goes to $OUT (default /tmp/gpu_check): gpu.txt, grid.md, kernels.md, grid-resume.md.
# Exit: 0 done, 3 the grid was stopped at its limit, 2 setup failed, else the failing step's code.
# GPU_CHECK_FLAGS replaces the benchmark's flags, e.g. "--device cpu --size tiny" for a dry run on a CPU.
set -uo pipefail

mode=grid
if [[ "${1:-}" == kernels ]]; then
    mode=kernels
    shift
fi
out=${OUT:-/tmp/gpu_check}
site=/tmp/raygrid-site
work=/tmp/raygrid-gpu-grid
python=${PYTHON:-python3}
mkdir -p "$out"

if [[ ! -f "$site/RAYGRID_BUNDLE.txt" ]]; then
    if [[ ! -f .bundle/site.tar.xz ]]; then
        echo "error: .bundle/site.tar.xz not found: build it with benchmarks/offline_bundle.py and copy it here" >&2
        exit 2
    fi
    mkdir -p "$site" && tar -xJf .bundle/site.tar.xz -C "$site" || exit 2
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_ADDRESS=local
read -r -a flags <<< "${GPU_CHECK_FLAGS:---device cuda --size medium --extractor resnet50}"
need_gpu=$([[ " ${flags[*]} " == *" --device cuda"* ]] && echo 1 || echo 0)
"$python" -c "
import sys, torch, ray, mlflow, lightfm, raygrid
if $need_gpu and not torch.cuda.is_available():
    sys.exit('error: torch sees no GPU')
print('ray from', ray.__file__)" || exit 2

if [[ "$mode" == grid ]]; then
    { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
      "$python" -c "import sys, torch, ray, mlflow; print(sys.version.split()[0], 'torch', torch.__version__, 'ray', ray.__version__, 'mlflow', mlflow.__version__)"
      echo "CPUs: $(nproc)"; free -g | head -2; date -u; } > "$out/gpu.txt" 2>&1
    rm -rf "$work"
    "$python" benchmarks/grid_scale.py "${flags[@]}" --skip-kernels --workdir "$work" --time-limit "${1:-480}" \
        2>&1 | tee "$out/grid.md"
    exit "${PIPESTATUS[0]}"
fi

timeout 240 "$python" benchmarks/grid_scale.py "${flags[@]}" --skip-grid 2>&1 | tee "$out/kernels.md"
status=${PIPESTATUS[0]}
resume_seconds=${1:-0}
last_stopped() {  # did the grid's last session stop at its time limit?
    "$python" -c "import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))[-1]['stopped_at_limit'] else 1)" \
        "$work/grid_scale_sessions.json" 2>/dev/null
}
if [[ "$resume_seconds" != 0 ]] && last_stopped; then
    "$python" benchmarks/grid_scale.py "${flags[@]}" --skip-kernels --workdir "$work" --resume \
        --time-limit "$resume_seconds" 2>&1 | tee "$out/grid-resume.md"
    status=${PIPESTATUS[0]}
fi
exit "$status"
