#!/usr/bin/env bash
# Installs what mim needs from Debian's packages. Safe to run twice: it only
# calls apt-get when a package is missing.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap pkg-config g++
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libabsl-dev libgoogle-glog-dev libgflags-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev
  libfasttext-dev fasttext nlohmann-json3-dev
  redis-server python3 python3-numpy python3-matplotlib python3-torch
  prometheus-cpp-dev prometheus python3-grpcio python3-protobuf openssl
  clang-14 libclang-rt-14-dev libfuzzer-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: all packages present" >&2
fi
