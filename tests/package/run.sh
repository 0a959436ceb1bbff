#!/usr/bin/env bash
# The package test: installs the build tree into a temporary prefix, then builds and runs two
# consumers of it there, one through find_package(vkoptim), one through pkg-config.
#   tests/package/run.sh <build dir>
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" > /dev/null
for f in lib/cmake/vkoptim/vkoptimConfig.cmake lib/cmake/vkoptim/vkoptimConfigVersion.cmake lib/pkgconfig/vkoptim.pc; do
  [ -f "$work/prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done

# find_package
cmake -S "$here" -B "$work/cmake-consumer" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" > /dev/null
cmake --build "$work/cmake-consumer" > /dev/null
"$work/cmake-consumer/consumer"

# pkg-config
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
c++ -std=c++20 -O1 "$here/consumer.cpp" -o "$work/pkg-consumer" $(pkg-config --cflags --libs vkoptim)
"$work/pkg-consumer"
