#!/usr/bin/env python3
"""GetObject of a one-block object reads its block while it asks the masters for the version
(`CellarS3::read_ahead` in frontend/src/s3/ops.rs): the block is the frontend's guess from
the last time it wrote or read the key, and the masters' answer decides. Run by
cli/tests/s3.rs against a cell with two S3 frontends: the writes that make the first
frontend's guess stale go through the second, and every get through the first must answer
what the masters hold.

Env: S3_ENDPOINT (the first frontend, whose metrics the test reads after), S3_ENDPOINT_2
(the second), S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION (default us-east-1).
Each check prints `ok <name>`; a failure raises (non-zero exit).
"""

import os
import random

from botocore.exceptions import ClientError

import cellar_s3

BUCKET = "read-ahead"


def client(endpoint):
    # One attempt: the test wants the server's own answer, not a retry's.
    saved = os.environ["S3_ENDPOINT"]
    os.environ["S3_ENDPOINT"] = endpoint
    try:
        return cellar_s3.client({"mode": "standard", "total_max_attempts": 1})
    finally:
        os.environ["S3_ENDPOINT"] = saved


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok {name}")


def body(seed, n):
    return random.Random(seed).randbytes(n)


def main():
    first = client(os.environ["S3_ENDPOINT"])
    second = client(os.environ["S3_ENDPOINT_2"])
    first.create_bucket(Bucket=BUCKET)

    def get(c, key, **kw):
        return c.get_object(Bucket=BUCKET, Key=key, **kw)["Body"].read()

    def error_of(call):
        try:
            call()
        except ClientError as e:
            return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
        return None

    a, b, c, large = body(1, 4096), body(2, 5000), body(3, 3000), body(4, 300 << 10)
    first.put_object(Bucket=BUCKET, Key="k", Body=a)
    for i in range(3):
        check(f"own write read back ({i})", get(first, "k") == a)

    # Overwritten through the other frontend: the first's guess (a) is stale.
    second.put_object(Bucket=BUCKET, Key="k", Body=b)
    check("an overwrite through another frontend is read, not the guess", get(first, "k") == b)
    check("... and again", get(first, "k") == b)

    # Deleted through the other frontend.
    second.delete_object(Bucket=BUCKET, Key="k")
    err = error_of(lambda: get(first, "k"))
    check("a delete through another frontend answers NoSuchKey", err == ("NoSuchKey", 404), str(err))

    # Replaced by a larger object (300 KiB, one block: read whole as a guess, since it is
    # under a frame; the guess is still the old block, so it is dropped).
    first.put_object(Bucket=BUCKET, Key="k", Body=c)
    check("small again", get(first, "k") == c)
    second.put_object(Bucket=BUCKET, Key="k", Body=large)
    check("replaced by a larger object through another frontend", get(first, "k") == large)
    first.put_object(Bucket=BUCKET, Key="k", Body=c)
    check("small once more", get(first, "k") == c)

    # A one-block object over the whole-read bound (256 KiB): its guess is read as it
    # arrives (streamed from an open volume's replica), and dropped the same way.
    big1, big2 = body(5, 3 << 20), body(6, 3 << 20)
    first.put_object(Bucket=BUCKET, Key="big", Body=big1)
    for i in range(2):
        check(f"a large object's own write read back ({i})", get(first, "big") == big1)
    second.put_object(Bucket=BUCKET, Key="big", Body=big2)
    check("a large object overwritten through another frontend is read, not the guess", get(first, "big") == big2)
    check("... and again", get(first, "big") == big2)
    big_etag = first.head_object(Bucket=BUCKET, Key="big")["ETag"]
    err = error_of(lambda: first.get_object(Bucket=BUCKET, Key="big", IfNoneMatch=big_etag))
    check("If-None-Match of a large object's ETag answers 304", err is not None and err[1] == 304, str(err))
    got = get(first, "big", Range="bytes=1048570-1048580")
    check("a range of a large object is its bytes", got == big2[1048570:1048581], repr(got))
    second.delete_object(Bucket=BUCKET, Key="big")
    err = error_of(lambda: get(first, "big"))
    check("a large object deleted through another frontend answers NoSuchKey", err == ("NoSuchKey", 404), str(err))

    # Conditions, ranges and versions are answered as before.
    etag = first.head_object(Bucket=BUCKET, Key="k")["ETag"]
    err = error_of(lambda: first.get_object(Bucket=BUCKET, Key="k", IfNoneMatch=etag))
    check("If-None-Match of the current ETag answers 304", err is not None and err[1] == 304, str(err))
    got = get(first, "k", Range="bytes=10-19")
    check("a range is the object's bytes", got == c[10:20], repr(got))
    first.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    v1 = first.put_object(Bucket=BUCKET, Key="v", Body=a)["VersionId"]
    check("versioned, latest", get(first, "v") == a)
    second.put_object(Bucket=BUCKET, Key="v", Body=b)
    check("versioned, latest written through another frontend", get(first, "v") == b)
    check("versioned, an older version by id", get(first, "v", VersionId=v1) == a)
    second.delete_object(Bucket=BUCKET, Key="v")
    err = error_of(lambda: get(first, "v"))
    check("versioned, a delete marker through another frontend answers NoSuchKey", err == ("NoSuchKey", 404), str(err))
    check("versioned, the older version still reads", get(first, "v", VersionId=v1) == a)


if __name__ == "__main__":
    main()
