#!/usr/bin/env bash
# Makes the S3 client tools that the real-client S3 tests use available, idempotently:
#   - a Python venv at ${CELLAR_S3_VENV:-$HOME/.cache/cellar/s3-venv} with boto3 and awscli
#   - rclone (Debian's package)
# Prints only short progress lines; fast (well under 2 s) when everything is present.
# Callers find the venv through the same default; export CELLAR_S3_VENV to move it.
set -euo pipefail

VENV="${CELLAR_S3_VENV:-$HOME/.cache/cellar/s3-venv}"

# Tests run this at the same time (one per test that needs the clients): one at a time,
# or a fresh machine's two apt-get runs fail on each other's dpkg lock (seen: "Could not
# get lock /var/lib/dpkg/lock-frontend", exit status 100). apt-get also waits for a dpkg
# lock another process holds, up to 10 minutes.
mkdir -p "$(dirname "$VENV")"
exec 9>"$(dirname "$VENV")/.s3-clients.lock"
flock -w 1200 9 || { echo "s3-clients: another install held the lock for 20 minutes" >&2; exit 1; }
APT_WAIT=(-o DPkg::Lock::Timeout=600)

venv_ok() {
  [ -x "$VENV/bin/aws" ] && [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c 'import boto3, botocore' >/dev/null 2>&1
}

if ! venv_ok; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "s3-clients: creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    # The system python3 (whichever is first on PATH) makes the venv; the venv then
    # stands on its own.
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      # Debian's own python3 needs python3-venv for ensurepip.
      rm -rf "$VENV"
      echo "s3-clients: installing python3-venv"
      sudo_cmd=""
      [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get "${APT_WAIT[@]}" install -y -qq python3-venv >/dev/null 2>&1 || {
        $sudo_cmd apt-get "${APT_WAIT[@]}" update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get "${APT_WAIT[@]}" install -y -qq python3-venv >/dev/null
      }
      python3 -m venv "$VENV"
    fi
  fi
  echo "s3-clients: installing boto3 and awscli into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check boto3 awscli
  if ! venv_ok; then
    echo "s3-clients: boto3/awscli still not usable in $VENV" >&2
    exit 1
  fi
fi

if ! command -v rclone >/dev/null 2>&1; then
  echo "s3-clients: installing rclone"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo_cmd apt-get "${APT_WAIT[@]}" install -y -qq rclone >/dev/null 2>&1; then
    $sudo_cmd apt-get "${APT_WAIT[@]}" update -qq
    $sudo_cmd apt-get "${APT_WAIT[@]}" install -y -qq rclone >/dev/null
  fi
  command -v rclone >/dev/null 2>&1 || { echo "s3-clients: rclone not found after install" >&2; exit 1; }
fi
