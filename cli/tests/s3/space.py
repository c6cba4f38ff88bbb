#!/usr/bin/env python3
"""Fills a bucket with objects through S3, or deletes every object (and upload) in it.

    space.py fill BUCKET MIB     # MIB MiB of random objects (4 MiB puts, some 1 KiB to 3 MiB
                                 # ones, two 20 MiB multipart uploads), printed as "filled N"
    space.py empty BUCKET        # every version and upload deleted, printed as "emptied N"
    space.py keep BUCKET         # 3 objects (4 MiB, 9 MiB, 1 KiB) put, printed as "kept N"
    space.py check BUCKET        # the keep objects read back byte-exact, printed as "intact N"
    space.py half BUCKET N       # N objects of 1 MiB put, then every other one deleted
    space.py checkhalf BUCKET N  # the ones left read back byte-exact, printed as "intact N"

Env: S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY (as the other scripts).
"""
import concurrent.futures as cf
import random
import sys

import cellar_s3


def client():
    return cellar_s3.client({"max_attempts": 3}, pool=16)


def fill(s3, bucket, mib):
    s3.create_bucket(Bucket=bucket)
    total = mib << 20
    rng = random.Random(4242)
    jobs, size_sum, i = [], 0, 0
    while size_sum < total - (40 << 20):
        size = 4 << 20 if i % 4 else rng.randrange(1024, 3 << 20)
        jobs.append((f"obj/{i:05d}", size, i))
        size_sum += size
        i += 1

    def put(job):
        key, size, seed = job
        s3.put_object(Bucket=bucket, Key=key, Body=random.Random(seed).randbytes(size))
        return size

    with cf.ThreadPoolExecutor(8) as ex:
        done = sum(ex.map(put, jobs))
    for m in range(2):
        key = f"multi/{m}"
        up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for n in range(1, 5):
            body = random.Random(100_000 + m * 10 + n).randbytes(5 << 20)
            r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=body)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
            done += len(body)
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
    print(f"filled {done}")


def empty(s3, bucket):
    n = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        items = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for chunk in range(0, len(items), 1000):
            r = s3.delete_objects(Bucket=bucket, Delete={"Objects": items[chunk:chunk + 1000], "Quiet": True})
            if r.get("Errors"):
                raise SystemExit(f"delete errors: {r['Errors'][:3]}")
            n += len(items[chunk:chunk + 1000])
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for u in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    s3.delete_bucket(Bucket=bucket)
    print(f"emptied {n}")


KEEP = [("keep/a", 4 << 20, 7001), ("keep/b", 9 << 20, 7002), ("keep/c", 1024, 7003)]


def keep(s3, bucket):
    s3.create_bucket(Bucket=bucket)
    for key, size, seed in KEEP:
        s3.put_object(Bucket=bucket, Key=key, Body=random.Random(seed).randbytes(size))
    print(f"kept {len(KEEP)}")


def check(s3, bucket):
    for key, size, seed in KEEP:
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if got != random.Random(seed).randbytes(size):
            raise SystemExit(f"{key}: {len(got)} bytes differ from what was put")
    print(f"intact {len(KEEP)}")


def half(s3, bucket, n):
    s3.create_bucket(Bucket=bucket)

    def put(i):
        s3.put_object(Bucket=bucket, Key=f"h/{i:04d}", Body=random.Random(9000 + i).randbytes(1 << 20))

    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(put, range(n)))
    for i in range(0, n, 2):
        s3.delete_object(Bucket=bucket, Key=f"h/{i:04d}")
    print(f"put {n}, deleted {len(range(0, n, 2))}")


def checkhalf(s3, bucket, n):
    for i in range(1, n, 2):
        got = s3.get_object(Bucket=bucket, Key=f"h/{i:04d}")["Body"].read()
        if got != random.Random(9000 + i).randbytes(1 << 20):
            raise SystemExit(f"h/{i:04d}: {len(got)} bytes differ from what was put")
    print(f"intact {len(range(1, n, 2))}")


if __name__ == "__main__":
    s3 = client()
    if sys.argv[1] == "fill":
        fill(s3, sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "keep":
        keep(s3, sys.argv[2])
    elif sys.argv[1] == "check":
        check(s3, sys.argv[2])
    elif sys.argv[1] == "half":
        half(s3, sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "checkhalf":
        checkhalf(s3, sys.argv[2], int(sys.argv[3]))
    else:
        empty(s3, sys.argv[2])
