# Sourced by the scripts in this directory: installs what cargo cannot (clang and
# libclang for RocksDB's bindgen) and keeps cargo's target directory outside the clone,
# so that a fresh clone reuses the RocksDB build of an earlier one.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
# bindgen loads libclang.so itself; libclang-cpp (often preinstalled) is not it.
if command -v dpkg >/dev/null 2>&1; then
  dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
elif ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (needed to build RocksDB)" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cellar/target}"
mkdir -p "$CARGO_TARGET_DIR"
