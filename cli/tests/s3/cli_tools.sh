#!/usr/bin/env bash
# Real-client S3 checks with the AWS CLI (v1, from the venv that scripts/s3-clients.sh
# makes) and rclone: big multipart copies, tree sync up/down/--delete, rclone copy/check/cat.
#
# Run:  S3_ENDPOINT=http://127.0.0.1:PORT S3_ACCESS_KEY=... S3_SECRET_KEY=... \
#       [S3_REGION=us-east-1] [VENV=$HOME/.cache/cellar/s3-venv] bash cli/tests/s3/cli_tools.sh
#
# Prints `ok <step>` per step; on the first failure prints `FAIL <step>: <detail>` to
# stderr and exits 1. Everything local lives in a temp dir removed on exit, and the
# bucket it made is removed too. All file contents come from seeded generators.
set -euo pipefail

: "${S3_ENDPOINT:?set S3_ENDPOINT}" "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}" "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
S3_REGION="${S3_REGION:-us-east-1}"
VENV="${VENV:-${CELLAR_S3_VENV:-$HOME/.cache/cellar/s3-venv}}"
PY="$VENV/bin/python"
[ -x "$VENV/bin/aws" ] || { echo "FAIL setup: no $VENV/bin/aws (run scripts/s3-clients.sh)" >&2; exit 1; }
command -v rclone >/dev/null || { echo "FAIL setup: no rclone (run scripts/s3-clients.sh)" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/cellar-s3-cli.XXXXXX")"
BUCKET="t-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')-cli"
BUCKET_MADE=0

# The AWS CLI and rclone see only what is set here, not any config of the user's.
export AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
export AWS_DEFAULT_REGION="$S3_REGION" AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE="$TMP/aws-config" AWS_SHARED_CREDENTIALS_FILE="$TMP/aws-credentials"
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 || true
export RCLONE_CONFIG="$TMP/rclone.conf" RCLONE_CACHE_DIR="$TMP/rclone-cache"
export RCLONE_CONFIG_CELLAR_TYPE=s3 RCLONE_CONFIG_CELLAR_PROVIDER=Other
export RCLONE_CONFIG_CELLAR_ENDPOINT="$S3_ENDPOINT" RCLONE_CONFIG_CELLAR_REGION="$S3_REGION"
export RCLONE_CONFIG_CELLAR_ACCESS_KEY_ID="$S3_ACCESS_KEY" RCLONE_CONFIG_CELLAR_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
export RCLONE_CONFIG_CELLAR_FORCE_PATH_STYLE=true
: > "$AWS_CONFIG_FILE"
: > "$AWS_SHARED_CREDENTIALS_FILE"
: > "$RCLONE_CONFIG"

# No silent retries by default: against a local server a timeout or a 5xx is a bug, and
# a retry would hide it. AWS_MAX_ATTEMPTS / RCLONE_*RETRIES / S3_CLI_READ_TIMEOUT override.
export AWS_MAX_ATTEMPTS="${AWS_MAX_ATTEMPTS:-1}" AWS_RETRY_MODE="${AWS_RETRY_MODE:-standard}"
export RCLONE_RETRIES="${RCLONE_RETRIES:-1}" RCLONE_LOW_LEVEL_RETRIES="${RCLONE_LOW_LEVEL_RETRIES:-1}"
aws() { "$VENV/bin/aws" --endpoint-url "$S3_ENDPOINT" --cli-read-timeout "${S3_CLI_READ_TIMEOUT:-30}" "$@"; }
# rclone 1.60's AWS SDK refuses a plain-HTTP endpoint when AWS_CA_BUNDLE is set.
rclone() { env -u AWS_CA_BUNDLE rclone "$@"; }

STEP=setup
LOG="$TMP/step.log"
fail() {
  echo "FAIL $STEP: $*" >&2
  if [ -s "$LOG" ]; then
    echo "---- last output of $STEP:" >&2
    tail -n 30 "$LOG" >&2
  fi
  exit 1
}
# run CMD...: runs a command with its output in $LOG, failing the step if it fails.
run() { "$@" >"$LOG" 2>&1 || fail "exit $? from: $*"; }
STEP_START=$SECONDS
ok() { echo "ok $STEP ($((SECONDS - STEP_START))s)"; STEP_START=$SECONDS; }

cleanup() {
  local rc=$?
  if [ "$BUCKET_MADE" = 1 ]; then
    aws s3 rb --force "s3://$BUCKET" >/dev/null 2>&1 || echo "warning: could not remove bucket $BUCKET" >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

# gen_tree DIR: 3 directories, 40 files of 0..3 MiB, contents from seeded generators.
gen_tree() {
  "$PY" - "$1" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(2024)
dirs = ["d1", "d2/sub", "d3"]
sizes = [0, 1, 17, 4096, 1 << 20, 3 << 20, (3 << 20) - 1, 65537]
for i in range(40):
    d = os.path.join(root, dirs[i % 3])
    os.makedirs(d, exist_ok=True)
    size = sizes[i] if i < len(sizes) else rng.randrange(0, 3 << 20)
    name = f"file {i}.bin" if i == 4 else f"f{i:02d}.bin"
    with open(os.path.join(d, name), "wb") as f:
        f.write(random.Random(1000 + i).randbytes(size))
EOF
}

# listing DIR: "relative/path size" lines, sorted.
local_listing() { (cd "$1" && find . -type f -printf '%P %s\n' | LC_ALL=C sort); }

STEP=make_bucket
run aws s3 mb "s3://$BUCKET"
BUCKET_MADE=1
run aws s3api head-bucket --bucket "$BUCKET"
ok

STEP=cp_100MiB
"$PY" -c "import random,sys; open(sys.argv[1],'wb').write(random.Random(7).randbytes(100*1024*1024))" "$TMP/big.bin"
run aws s3 cp --only-show-errors "$TMP/big.bin" "s3://$BUCKET/big/big.bin"
run aws s3 cp --only-show-errors "s3://$BUCKET/big/big.bin" "$TMP/big.down"
cmp "$TMP/big.bin" "$TMP/big.down" >"$LOG" 2>&1 || fail "downloaded 100 MiB file differs"
size=$(aws s3api head-object --bucket "$BUCKET" --key big/big.bin --query ContentLength --output text) ||
  fail "head-object failed"
[ "$size" = $((100 * 1024 * 1024)) ] || fail "head-object ContentLength $size"
rm -f "$TMP/big.bin" "$TMP/big.down"
ok

STEP=sync_up_down
gen_tree "$TMP/tree"
[ "$(find "$TMP/tree" -type f | wc -l)" = 40 ] || fail "tree generator made the wrong number of files"
run aws s3 sync --only-show-errors "$TMP/tree" "s3://$BUCKET/tree/"
run aws s3 sync --only-show-errors "s3://$BUCKET/tree/" "$TMP/down"
diff -r "$TMP/tree" "$TMP/down" >"$LOG" 2>&1 || fail "tree synced down differs"
ok

# remote_listing PREFIX: "relative/path size" lines of s3://BUCKET/PREFIX, sorted.
remote_listing() {
  aws s3api list-objects-v2 --bucket "$BUCKET" --prefix "$1" --output json |
    "$PY" -c '
import json, sys
prefix = sys.argv[1]
raw = sys.stdin.read()
doc = json.loads(raw) if raw.strip() else {}
rows = ["%s %d" % (o["Key"][len(prefix):], o["Size"]) for o in doc.get("Contents", [])]
print("\n".join(sorted(rows, key=lambda s: s.encode())))' "$1"
}

STEP=sync_delete
"$PY" -c "import random,sys; open(sys.argv[1],'wb').write(random.Random(99).randbytes(12345))" "$TMP/tree/d1/f03.bin"
rm "$TMP/tree/d3/f02.bin"
run aws s3 sync --only-show-errors --delete "$TMP/tree" "s3://$BUCKET/tree/"
remote_listing tree/ >"$TMP/remote.txt" 2>"$LOG" || fail "listing s3://$BUCKET/tree/ failed"
local_listing "$TMP/tree" >"$TMP/local.txt"
diff "$TMP/local.txt" "$TMP/remote.txt" >"$LOG" 2>&1 || fail "remote listing differs from the local tree (< local, > remote)"
run aws s3 cp --only-show-errors "s3://$BUCKET/tree/d1/f03.bin" "$TMP/f03.down"
cmp "$TMP/tree/d1/f03.bin" "$TMP/f03.down" >"$LOG" 2>&1 || fail "changed file not updated remotely"
rm -rf "$TMP/down"
run aws s3 sync --only-show-errors "s3://$BUCKET/tree/" "$TMP/down"
diff -r "$TMP/tree" "$TMP/down" >"$LOG" 2>&1 || fail "tree synced down after --delete differs"
ok

STEP=rclone_copy_check
run rclone copy "$TMP/tree" "cellar:$BUCKET/rc/"
rclone check "$TMP/tree" "cellar:$BUCKET/rc/" >"$LOG" 2>&1 || fail "rclone check exited $?"
grep -q ' 0 differences found' "$LOG" || fail "rclone check did not report 0 differences"
grep -q 'ERROR' "$LOG" && fail "rclone check logged errors"
[ "$(rclone lsf -R --files-only "cellar:$BUCKET/rc/" 2>"$LOG" | wc -l)" = 39 ] || fail "rclone lsf does not list 39 files"
ok

STEP=rclone_cat
rclone cat "cellar:$BUCKET/rc/d2/sub/file 4.bin" >"$TMP/cat.out" 2>"$LOG" || fail "rclone cat exited $?"
cmp "$TMP/tree/d2/sub/file 4.bin" "$TMP/cat.out" >"$LOG" 2>&1 || fail "rclone cat output differs"
rclone cat "cellar:$BUCKET/big/big.bin" --offset 1048570 --count 20 >"$TMP/cat.part" 2>"$LOG" || fail "rclone cat --offset exited $?"
"$PY" -c "
import random, sys
want = random.Random(7).randbytes(100*1024*1024)[1048570:1048590]
sys.exit(0 if open(sys.argv[1], 'rb').read() == want else 1)" "$TMP/cat.part" || fail "rclone cat --offset/--count bytes differ"
ok

STEP=remove_bucket
run aws s3 rb --force "s3://$BUCKET"
BUCKET_MADE=0
if aws s3api head-bucket --bucket "$BUCKET" >"$LOG" 2>&1; then fail "bucket still there after rb --force"; fi
ok
echo "cli_tools: 7 passed, 0 failed"
