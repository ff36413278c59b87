#!/usr/bin/env bash
# The GPU check: `bash benchmarks/gpu_check.sh [--tiny] [--device cpu] [--budget S] [--out FILE]`.
#
# On a bare GPU machine (Python 3.12 with torch, torchvision, pandas, rich, matplotlib, scikit-learn, tensorboard;
# no package registry) it first installs what is missing (gin-config, submitit, kornia, kornia_rs, pytest) from the
# wheels in benchmarks/wheels/ (git-ignored) into a scratch folder, then runs the device parity tests
# (tests/test_device_parity.py: on CUDA when one is present) and benchmarks/gpu_check.py, which prints one markdown
# table of timings within 8 minutes and writes it to $OUT/gpu_check.md when OUT is set. Where those packages import
# already (this project's virtualenv) nothing is installed; GPU_CHECK_TESTS=0 leaves the tests out (the test
# suite's `--device cpu --tiny` run, which runs them itself).
#
# Fetch the wheels once, on a machine that reaches PyPI, for the device's Python (3.12, x86-64 manylinux):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d benchmarks/wheels gin-config==0.5.0 submitit==1.5.4 kornia==0.9.0 kornia_rs==0.2.0 \
#     pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 packaging==26.2
#
# (about 8 MB; their other requirements, numpy, torch, cloudpickle and typing_extensions, are on the device.) Then, from
# the device tool, carrying the wheels: run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/wheels"],
# timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if ! "$python" -c "import gin, kornia, submitit, pytest" 2>/dev/null; then
    shopt -s nullglob
    wheels=(benchmarks/wheels/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        echo "error: gin-config, kornia, submitit or pytest is missing and benchmarks/wheels/ holds no wheels;" \
             "download them with the pip command in the header of $0" >&2
        exit 2
    fi
    site="${TMPDIR:-/tmp}/pirl-ablate-site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "${GPU_CHECK_TESTS:-1}" != 0 ]; then
    "$python" -m pytest -q -p no:cacheprovider tests/test_device_parity.py
fi
exec "$python" benchmarks/gpu_check.py "$@"
