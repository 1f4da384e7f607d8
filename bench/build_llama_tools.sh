#!/usr/bin/env bash
# Build llama.cpp's own llama-bench and llama-server, the engine-efficiency
# references, from the llama.cpp source vendored in the llama-cpp-python sdist
# (the same llama.cpp the node runs). Everything lands in bench/out/ (git-ignored);
# nothing built here is committed. About 8 minutes on 2 cores.
#
#   bash bench/build_llama_tools.sh            # version = installed llama-cpp-python
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 bash bench/build_llama_tools.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
version="${LLAMA_CPP_PYTHON_VERSION:-$(python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')}"
jobs="${JOBS:-$(nproc)}"
mkdir -p "$out/sdist"
cd "$out/sdist"
if [ ! -f "llama_cpp_python-$version.tar.gz" ]; then
  pip download --no-deps --no-binary :all: "llama-cpp-python==$version" -d .
fi
src="$out/sdist/llama_cpp_python-$version"
[ -d "$src" ] || tar xzf "llama_cpp_python-$version.tar.gz"
cd "$src/vendor/llama.cpp"
cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
cmake --build build --target llama-server llama-bench -j"$jobs"
mkdir -p "$out/bin"
ln -sf "$src/vendor/llama.cpp/build/bin/llama-server" "$out/bin/llama-server"
ln -sf "$src/vendor/llama.cpp/build/bin/llama-bench" "$out/bin/llama-bench"
echo "built: $out/bin/llama-server $out/bin/llama-bench"
