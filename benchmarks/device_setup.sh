# shellcheck shell=bash
# Make NeMo 3.0 ASR importable on the GPU device machine (python3 there = /opt/torch/.venv, Python
# 3.12, torch 2.11.0+cu130). SOURCE it at the start of a device command, with `.whl` in `carry`:
#
#     source benchmarks/device_setup.sh || exit 1; python3 -m benchmarks.engine ...
#
# (from the repository root: the benchmarks are a package, found on the working directory)
#
# It installs ./.whl/*.whl into /tmp/site (no index, no deps, no torch/CUDA wheels) and exports
# PYTHONPATH=<repo>/src:/tmp/site so this checkout and the wheels sit in front of the device's
# site-packages, and puts /tmp/site/bin (the wheels' executables) on PATH. A warm machine that
# already has the same wheel set installed skips the install.
#
# Preparing .whl (on the dev machine, repo root; ~37 MB, git-ignored, travels via `carry`):
#
#     grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
#     mkdir -p .whl
#     P="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
#     sed 's/#.*//' benchmarks/device-wheels.txt | while read -r req; do
#       [ -n "$req" ] || continue
#       python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#           --implementation cp $P -d .whl "$req" \
#         || python3 -m pip wheel -q --no-deps -w .whl "$req"   # antlr4-python3-runtime: sdist only
#     done
#
# Verified on nvidia-h200 (torch 2.11.0+cu130): imports nemo.collections.asr, restores
# tests/assets/asr/tiny-asr.nemo on cuda and transcribes; `pip check` clean. The first import takes
# ~20 s (no .pyc yet). lightning 2.4.0 is required: with the device's lightning 2.6.6, importing
# NeMo fails in nv_one_logger (OneLoggerPTLTrainer.save_checkpoint signature TypeError).
#
# Keep exactly one version of each package in .whl (two break the install). benchmarks/device-wheels.txt
# says why each wheel is there (missing on the device, or the device's version breaks a NeMo pin).

if ! (return 0 2>/dev/null); then
    echo "device_setup.sh must be sourced: source benchmarks/device_setup.sh" >&2
    exit 2
fi

_ns_whl="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.whl"
if ! compgen -G "$_ns_whl/*.whl" >/dev/null; then
    echo "device_setup: no wheels in $_ns_whl (prepare them, and pass carry: [\".whl\"])" >&2
    unset _ns_whl
    return 1
fi

_ns_stamp="$(cd "$_ns_whl" && ls -l -- *.whl | md5sum | cut -d' ' -f1)"
if [ "$(cat /tmp/site/.device_setup_stamp 2>/dev/null)" != "$_ns_stamp" ]; then
    rm -rf /tmp/site
    if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$_ns_whl"/*.whl; then
        echo "device_setup: pip install of $_ns_whl failed" >&2
        unset _ns_whl _ns_stamp
        return 1
    fi
    echo "$_ns_stamp" > /tmp/site/.device_setup_stamp
fi
_ns_src="$(dirname "$_ns_whl")/src"  # this checkout's nemotron_speech, ahead of the wheels
case ":${PYTHONPATH:-}:" in
    *:/tmp/site:*) ;;
    *) export PYTHONPATH="$_ns_src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
case ":$PATH:" in  # the wheels' executables (py-spy)
    *:/tmp/site/bin:*) ;;
    *) export PATH="/tmp/site/bin:$PATH" ;;
esac
unset _ns_whl _ns_stamp _ns_src
return 0
