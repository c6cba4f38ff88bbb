#!/usr/bin/env python3
"""S3 scale benchmarks against one endpoint (env S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY).

    s3_scale.py keys BUCKET N PROCS      # N zero-byte objects, PROCS client processes
    s3_scale.py list BUCKET ROUNDS       # ListObjectsV2 of the whole bucket (1000 per page)
    s3_scale.py list-raw BUCKET ROUNDS   # the same with a lean client: signed requests
                                         # (botocore's SigV4 signer, http.client) over one
                                         # keep-alive connection, keys counted in
                                         # the XML with a regular expression (botocore's XML
                                         # parsing costs more than the server's page)
    s3_scale.py multipart BUCKET GIB     # one upload of GIB GiB in 5 MiB parts, one client

Each prints one JSON line with its figures.
"""
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import boto3
from botocore.config import Config


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        aws_access_key_id=os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def put_range(args):
    bucket, start, end = args
    s3 = client()
    for i in range(start, end):
        s3.put_object(Bucket=bucket, Key=f"k/{i:09d}", Body=b"")
    return end - start


def keys(bucket, n, procs):
    s3 = client()
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    step = (n + procs - 1) // procs
    ranges = [(bucket, i, min(n, i + step)) for i in range(0, n, step)]
    t = time.time()
    with mp.Pool(procs) as pool:
        done = sum(pool.map(put_range, ranges))
    secs = time.time() - t
    print(json.dumps({"phase": "keys", "keys": done, "secs": round(secs, 1), "keys_per_sec": round(done / secs)}))


def list_all(bucket, rounds):
    s3 = client()
    rates, counts = [], []
    for _ in range(rounds):
        t, n, token = time.time(), 0, None
        while True:
            kw = {"Bucket": bucket, "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            page = s3.list_objects_v2(**kw)
            n += page.get("KeyCount", 0)
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]
        secs = time.time() - t
        rates.append(n / secs)
        counts.append(n)
    print(json.dumps({"phase": "list", "keys": counts, "keys_per_sec": [round(r) for r in rates],
                      "median_keys_per_sec": round(statistics.median(rates))}))


def list_raw(bucket, rounds):
    import http.client
    import re
    import urllib.parse
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    endpoint = os.environ["S3_ENDPOINT"]
    creds = Credentials(os.environ["S3_ACCESS_KEY"], os.environ["S3_SECRET_KEY"])
    url = urllib.parse.urlparse(endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    key_re = re.compile(rb"<Key>")
    token_re = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
    rates, counts, waits = [], [], []
    for _ in range(rounds):
        t, n, token, waited = time.time(), 0, None, 0.0
        while True:
            query = "list-type=2&max-keys=1000"
            if token:
                query += "&continuation-token=" + urllib.parse.quote(token, safe="")
            req = AWSRequest(method="GET", url=f"{endpoint}/{bucket}?{query}")
            S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
            w = time.time()
            conn.request("GET", f"/{bucket}?{query}", headers=dict(req.headers.items()))
            resp = conn.getresponse()
            body = resp.read()
            waited += time.time() - w
            if resp.status != 200:
                raise SystemExit(f"HTTP {resp.status}: {body[:300]!r}")
            n += len(key_re.findall(body))
            m = token_re.search(body)
            if not m:
                break
            token = m.group(1).decode()
        secs = time.time() - t
        rates.append(n / secs)
        counts.append(n)
        waits.append(waited)
    print(json.dumps({"phase": "list-raw", "keys": counts, "keys_per_sec": [round(r) for r in rates],
                      "median_keys_per_sec": round(statistics.median(rates)),
                      "request_secs": [round(w, 2) for w in waits]}))


def multipart(bucket, gib):
    s3 = client()
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    part_bytes = 5 << 20
    parts_n = (gib << 30) // part_bytes
    pool = [os.urandom(part_bytes) for _ in range(8)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    times, parts = [], []
    t0 = time.time()
    for n in range(1, parts_n + 1):
        # Distinct content per part (no dedup): the part number stamped over a pooled body.
        body = n.to_bytes(8, "little") + pool[n % 8][8:]
        t = time.time()
        r = s3.upload_part(Bucket=bucket, Key="big", UploadId=up, PartNumber=n, Body=body)
        times.append(time.time() - t)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    t = time.time()
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=up, MultipartUpload={"Parts": parts})
    complete = time.time() - t
    total = time.time() - t0
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == parts_n * part_bytes, head
    print(json.dumps({
        "phase": "multipart", "parts": parts_n, "bytes": parts_n * part_bytes, "secs": round(total, 1),
        "mb_per_sec": round(parts_n * part_bytes / 1e6 / total, 1),
        "first_100_median_ms": round(statistics.median(times[:100]) * 1000, 1),
        "last_100_median_ms": round(statistics.median(times[-100:]) * 1000, 1),
        "first_100_p90_ms": round(statistics.quantiles(times[:100], n=10)[-1] * 1000, 1),
        "last_100_p90_ms": round(statistics.quantiles(times[-100:], n=10)[-1] * 1000, 1),
        "complete_ms": round(complete * 1000, 1),
    }))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "keys":
        keys(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif what == "list":
        list_all(sys.argv[2], int(sys.argv[3]))
    elif what == "list-raw":
        list_raw(sys.argv[2], int(sys.argv[3]))
    else:
        multipart(sys.argv[2], int(sys.argv[3]))
