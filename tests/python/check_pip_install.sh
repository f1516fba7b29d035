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

# A source distribution carries what the extension module is built from: its tree configures, and
# every source the module and the program compile is in it (a dry run of the build).
(cd "$repo" && "$python" setup.py -q egg_info --egg-base "$work" sdist -d "$work/dist" > "$work/sdist.log" 2>&1) || { cat "$work/sdist.log"; exit 1; }
tar xzf "$work"/dist/sa2va-*.tar.gz -C "$work"
sdist=$(echo "$work"/sa2va-*/)
cmake -S "$sdist" -B "$work/sdist-build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSA2VA_BUILD_TESTS=OFF \
  -DSA2VA_BUILD_BENCH=OFF -DSA2VA_BUILD_PYTHON=ON -DPython_EXECUTABLE="$python" \
  -DCMAKE_SUPPRESS_REGENERATION=ON > "$work/sdist-configure.log"
ninja -C "$work/sdist-build" -n _sa2va sa2va > "$work/sdist-dry-run.log" || { tail -3 "$work/sdist-dry-run.log"; exit 1; }
echo "the source distribution holds every source of the module"
