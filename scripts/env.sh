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

# Cargo decides by file times whether a workspace crate must be built again; where the
# sources are is not part of that. A target directory last used by another clone (built
# from newer files) would keep binaries compiled with that clone's paths
# (`env!("CARGO_MANIFEST_DIR")`), and the tests would run that clone's scripts, or fail
# where it is gone. So when the clone using this target directory changes, its workspace
# sources are touched: cargo builds the workspace crates again (not the dependencies).
clone_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
clone_stamp="$CARGO_TARGET_DIR/.cellar-clone"
if [ "$(cat "$clone_stamp" 2>/dev/null || true)" != "$clone_root" ]; then
  echo "the target directory was last used by another clone: building this clone's crates again" >&2
  (cd "$clone_root" && find . -path ./.git -prune -o \( -name '*.rs' -o -name '*.proto' \) -print0 | xargs -0 touch)
  echo "$clone_root" >"$clone_stamp"
fi
