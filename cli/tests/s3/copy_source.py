#!/usr/bin/env python3
"""UploadPartCopy whose source cannot be read: run in three steps by cli/tests/s3.rs,
which freezes every volume server (SIGSTOP) between the first two and thaws them before
the third.

  prepare BUCKET       creates BUCKET, puts `source` (6 MiB: two blocks) and starts a
                       multipart upload of `copy`; prints `upload <id>`
  unreadable BUCKET ID UploadPartCopy of `source` into part 1 must fail with
                       ServiceUnavailable (503) naming the copy source, within the bound
                       the frontend gives a copy source, and add no part
  readable BUCKET ID   the same copy now succeeds; the upload completes, and `copy` reads
                       back byte-exact

Env: S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION (default us-east-1).
Each check prints `ok <name>`; a failure raises (non-zero exit).
"""

import hashlib
import random
import sys
import time

from botocore.exceptions import ClientError

import cellar_s3

MiB = 1024 * 1024
SOURCE_BYTES = 6 * MiB
# The frontend's bound on a copy source with the default deadlines (2 x (read 5 s +
# control 10 s)), and room for the upload check and the answer.
BOUND_S = 45.0


def client():
    # One attempt: the test wants the server's own answer, not a retry's.
    return cellar_s3.client({"mode": "standard", "total_max_attempts": 1})


def source_bytes():
    return random.Random(7).randbytes(SOURCE_BYTES)


def parts(c, bucket, upload):
    return c.list_parts(Bucket=bucket, Key="copy", UploadId=upload).get("Parts", [])


def prepare(bucket):
    c = client()
    c.create_bucket(Bucket=bucket)
    c.put_object(Bucket=bucket, Key="source", Body=source_bytes())
    upload = c.create_multipart_upload(Bucket=bucket, Key="copy")["UploadId"]
    print("ok prepared")
    print(f"upload {upload}")


def unreadable(bucket, upload):
    c = client()
    started = time.monotonic()
    try:
        c.upload_part_copy(
            Bucket=bucket, Key="copy", UploadId=upload, PartNumber=1, CopySource=f"{bucket}/source"
        )
    except ClientError as e:
        took = time.monotonic() - started
        err = e.response["Error"]
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert err["Code"] == "ServiceUnavailable", f"code {err['Code']}: {err.get('Message')}"
        assert status == 503, f"status {status}"
        assert "copy source" in err.get("Message", ""), f"message {err.get('Message')!r}"
        assert took < BOUND_S, f"the failure took {took:.1f} s"
        print(f"ok unreadable source: {err['Code']} after {took:.1f} s: {err.get('Message')}")
    else:
        raise AssertionError("UploadPartCopy succeeded with every volume server frozen")
    listed = parts(c, bucket, upload)
    assert listed == [], f"a failed copy added parts: {listed}"
    print("ok no part added")


def readable(bucket, upload):
    c = client()
    # The volume servers were frozen: the first reads after the thaw may still meet a
    # channel the frontend is replacing, and the copy is a retryable failure then.
    deadline = time.monotonic() + 60
    while True:
        try:
            r = c.upload_part_copy(
                Bucket=bucket, Key="copy", UploadId=upload, PartNumber=1, CopySource=f"{bucket}/source"
            )
            break
        except ClientError as e:
            if e.response["Error"]["Code"] != "ServiceUnavailable" or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    want = source_bytes()
    etag = r["CopyPartResult"]["ETag"]
    assert etag.strip('"') == hashlib.md5(want).hexdigest(), f"part ETag {etag}"
    listed = parts(c, bucket, upload)
    assert [p["PartNumber"] for p in listed] == [1], f"parts {listed}"
    c.complete_multipart_upload(
        Bucket=bucket, Key="copy", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    got = c.get_object(Bucket=bucket, Key="copy")["Body"].read()
    assert got == want, f"copy reads back {len(got)} bytes, not the source's {len(want)}"
    print("ok copy completed and read back")


def main():
    step, bucket = sys.argv[1], sys.argv[2]
    if step == "prepare":
        prepare(bucket)
    elif step == "unreadable":
        unreadable(bucket, sys.argv[3])
    elif step == "readable":
        readable(bucket, sys.argv[3])
    else:
        raise SystemExit(f"unknown step {step}")


if __name__ == "__main__":
    main()
