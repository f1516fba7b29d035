#!/usr/bin/env bash
# `pip install --no-build-isolation .` into a fresh virtual environment (seeing Debian's numpy and
# PIL), offline, reusing the CMake build tree; then the package as installed passes its own tests.
#   check_pip_install.sh PYTHON BUILD_DIR WORK_DIR
set -euo pipefail
python=$1 build=$2 work=$3
repo=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$work" && mkdir -p "$work"
"$python" -m venv --system-site-packages "$work/venv"
(cd "$repo" && SA2VA_BUILD_DIR="$build" "$work/venv/bin/pip" install --no-build-isolation --no-index --quiet .)
cd "$work"
location=$("$work/venv/bin/python" -c 'import sa2va; print(sa2va.__file__)')
case "$location" in
  "$work/venv/"*) ;;
  *) echo "sa2va imported from $location, not from the virtual environment"; exit 1 ;;
esac
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/python" -k "manual or example or image_masks_match or seg2bmap"
# The benchmark commands are installed with the package.
"$work/venv/bin/python" -m sa2va.eval refcoco -h | grep -q "cIoU"
