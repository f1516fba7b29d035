#!/usr/bin/env bash
# Installs a build tree into a fresh prefix and builds programs against it: with find_package(sa2va)
# and with pkg-config. Runs them on the tiny fixture model when it is at hand.
# The fixtures come from $SA2VA_FIXTURES (default ../shared/fixtures beside the repository); without
# them that part is skipped, except under CI=true where it is a failure.
#   check_install.sh BUILD_DIR WORK_DIR
set -euo pipefail
build=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
model=${SA2VA_FIXTURES:-$here/../../../shared/fixtures}/sa2va-tiny
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
for f in include/sa2va/sa2va.h lib/cmake/sa2va/sa2vaConfig.cmake lib/pkgconfig/sa2va.pc bin/sa2va; do
  [ -e "$work/prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done
ls "$work/prefix/lib" | grep -q '^libsa2va\.\(a\|so\)' || { echo "no libsa2va installed"; exit 1; }

cmake -S "$here/consumer" -B "$work/cmake-consumer" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release > "$work/configure.log"
cmake --build "$work/cmake-consumer" > "$work/build.log"

export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
g++ -std=c++20 -O1 "$here/consumer/consumer.cpp" -o "$work/pkgconfig-consumer" $(pkg-config --cflags --libs sa2va)

args=()
if [ -d "$model" ]; then
  args=("$model" "$model/inputs/image.png" "<image>Please segment the red circle." "Sure, [SEG].")
elif [ "${CI:-}" = "true" ]; then
  echo "fixture $model not found (set SA2VA_FIXTURES)"; exit 1
else
  echo "fixture $model not found (set SA2VA_FIXTURES): the installed library is not run on a model"
fi
for program in "$work/cmake-consumer/consumer" "$work/pkgconfig-consumer"; do
  LD_LIBRARY_PATH="$work/prefix/lib" "$program" "${args[@]}"
done
echo "installed tree usable from CMake and pkg-config"
