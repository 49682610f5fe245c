#!/bin/sh
# Build llama.cpp's `llama-server` once per machine, from the llama.cpp sources vendored in the
# llama-cpp-python sdist pinned in constraints.txt; cached under $LLAMA_SERVER_CACHE (default
# ~/.cache/llmos/llama-server/<version>/), so a second run costs nothing. Nothing is downloaded
# but the sdist from PyPI: no curl, no web UI (LLAMA_BUILD_UI and LLAMA_USE_PREBUILT_UI off).
# Prints the binary's path. Usage: tools/build-llama-server.sh [PYTHON]
set -eu
PYTHON=${1:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
VERSION=$(sed -n 's/^llama-cpp-python==//p' "$HERE/constraints.txt")
[ -n "$VERSION" ] || { echo "build-llama-server: no llama-cpp-python pin in constraints.txt" >&2; exit 2; }
CACHE=${LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmos/llama-server}/$VERSION
BIN=$CACHE/bin/llama-server
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then echo "$BIN"; exit 0; fi
command -v cmake >/dev/null 2>&1 || { echo "build-llama-server: cmake is not installed (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "build-llama-server: building llama-server $VERSION (about 10 minutes on 2 cores)" >&2
SDIST=${LLAMA_CPP_SDIST:-}   # a local llama_cpp_python-$VERSION.tar.gz, else pip downloads it
if [ -z "$SDIST" ]; then
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK" >&2
    SDIST=$WORK/llama_cpp_python-$VERSION.tar.gz
fi
tar xzf "$SDIST" -C "$WORK"
SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp
nice -n 19 cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON >&2
nice -n 19 cmake --build "$WORK/build" --target llama-server -j2 >&2
mkdir -p "$CACHE/bin"
cp "$WORK/build/bin/llama-server" "$BIN.part" && mv "$BIN.part" "$BIN"
"$BIN" --version >/dev/null 2>&1 || { echo "build-llama-server: the built llama-server does not run" >&2; exit 1; }
echo "$BIN"
