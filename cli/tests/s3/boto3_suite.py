#!/usr/bin/env python3
"""Real-client S3 conformance checks, driven through boto3.

Run:  S3_ENDPOINT=http://127.0.0.1:PORT S3_ACCESS_KEY=... S3_SECRET_KEY=... \
      $VENV/bin/python cli/tests/s3/boto3_suite.py [name-substring ...]

Env: S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION (default us-east-1).
Every check prints `ok <name>`; the first failure prints `FAIL <name>: <detail>` to
stderr and the script exits 1 (after a best-effort cleanup of its buckets).
Arguments, if given, select the checks whose names contain one of them (the bucket
setup and cleanup checks always run). S3_KEEP_GOING=1 runs every check after a
failure too (later checks may then fail for the earlier one's sake).

The assertions follow AWS S3's documented behaviour, not any one implementation's.
Only boto3/botocore and the standard library are used; all object data comes from
seeded generators, so a run is reproducible apart from the bucket names.
"""

import base64
import datetime
import hashlib
import os
import random
import re
import secrets
import sys
import traceback
import urllib.request
import zlib

from botocore.exceptions import ClientError

import cellar_s3

KiB = 1024
MiB = 1024 * 1024

ENDPOINT = os.environ.get("S3_ENDPOINT", "")
ACCESS_KEY = os.environ.get("S3_ACCESS_KEY", "")
SECRET_KEY = os.environ.get("S3_SECRET_KEY", "")
REGION = os.environ.get("S3_REGION") or "us-east-1"

RUN = secrets.token_hex(4)
BUCKET = f"t-{RUN}-main"  # most object checks
BUCKET2 = f"t-{RUN}-other"  # copy target across buckets
CREATED = []  # every bucket this run created, for cleanup


class Fail(Exception):
    pass


def client():
    return cellar_s3.client({"max_attempts": 2})


S3 = None  # set in main()


# ---------------------------------------------------------------- helpers


def data(n, seed):
    return random.Random(seed).randbytes(n)


def md5_etag(b):
    return '"' + hashlib.md5(b).hexdigest() + '"'


def expect(cond, detail):
    if not cond:
        raise Fail(detail)


def eq(got, want, what):
    if got != want:
        g, w = got, want
        if isinstance(g, (bytes, bytearray)) and isinstance(w, (bytes, bytearray)):
            first = next((i for i in range(min(len(g), len(w))) if g[i] != w[i]), None)
            raise Fail(f"{what}: bytes differ (got {len(g)} bytes, want {len(w)}, first difference at {first})")
        raise Fail(f"{what}: got {g!r}, want {w!r}")


def err_code_status(e):
    r = e.response
    return r.get("Error", {}).get("Code"), r.get("ResponseMetadata", {}).get("HTTPStatusCode")


def expect_error(codes, fn, *args, status=None, **kwargs):
    """Calls fn, which must fail with one of `codes` (a str or a tuple), and with
    HTTP `status` if given. Returns the code."""
    what = getattr(fn, "__name__", str(fn))
    if isinstance(codes, str):
        codes = (codes,)
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        code, st = err_code_status(e)
        if code not in codes:
            raise Fail(f"{what}: expected error {'/'.join(codes)}, got {code} (HTTP {st}): {e}")
        if status is not None and st != status:
            raise Fail(f"{what}: error {code}: expected HTTP {status}, got {st}")
        return code
    raise Fail(f"{what}: expected error {'/'.join(codes)}, but the call succeeded")


def status_of(resp):
    return resp["ResponseMetadata"]["HTTPStatusCode"]


def get_bytes(bucket, key, **kw):
    r = S3.get_object(Bucket=bucket, Key=key, **kw)
    return r, r["Body"].read()


def make_bucket(name):
    S3.create_bucket(Bucket=name)
    CREATED.append(name)
    return name


def purge_bucket(name):
    """Deletes every version, delete marker and multipart upload, then the bucket."""
    s3 = S3
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for u in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
    batch = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            batch.append({"Key": v["Key"], "VersionId": v["VersionId"]})
    for i in range(0, len(batch), 1000):
        r = s3.delete_objects(Bucket=name, Delete={"Objects": batch[i : i + 1000], "Quiet": True})
        if r.get("Errors"):
            raise Fail(f"purge {name}: delete_objects errors {r['Errors'][:3]}")
    # An unversioned listing too, in case the server's version listing missed something.
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=o["Key"])
    s3.delete_bucket(Bucket=name)


def crc32c(b):
    """CRC-32C (Castagnoli), reflected, as S3's x-amz-checksum-crc32c uses."""
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for byte in b:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_CRC32C_TABLE = None


def _crc32c_table():
    global _CRC32C_TABLE
    if _CRC32C_TABLE is None:
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            t.append(c)
        _CRC32C_TABLE = t
    return _CRC32C_TABLE


def b64(b):
    return base64.b64encode(b).decode()


def checksum_value(alg, body):
    if alg == "CRC32":
        return b64((zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big"))
    if alg == "CRC32C":
        return b64(crc32c(body).to_bytes(4, "big"))
    if alg == "SHA256":
        return b64(hashlib.sha256(body).digest())
    raise ValueError(alg)


# ---------------------------------------------------------------- checks

CHECKS = []
ALWAYS = set()


def check(fn=None, always=False):
    def reg(f):
        CHECKS.append(f)
        if always:
            ALWAYS.add(f.__name__)
        return f

    return reg(fn) if fn else reg


@check
def bucket_create_head_list_delete():
    name = f"t-{RUN}-life"
    r = S3.create_bucket(Bucket=name)
    CREATED.append(name)
    eq(status_of(r), 200, "CreateBucket status")
    eq(status_of(S3.head_bucket(Bucket=name)), 200, "HeadBucket status")
    names = [b["Name"] for b in S3.list_buckets()["Buckets"]]
    expect(name in names, f"ListBuckets lacks {name}: {names}")
    r = S3.delete_bucket(Bucket=name)
    eq(status_of(r), 204, "DeleteBucket status")
    CREATED.remove(name)
    expect_error(("404", "NoSuchBucket"), S3.head_bucket, Bucket=name, status=404)
    names = [b["Name"] for b in S3.list_buckets()["Buckets"]]
    expect(name not in names, f"ListBuckets still lists deleted {name}")


@check
def bucket_delete_not_empty():
    name = make_bucket(f"t-{RUN}-full")
    S3.put_object(Bucket=name, Key="k", Body=b"x")
    expect_error("BucketNotEmpty", S3.delete_bucket, Bucket=name, status=409)
    eq(status_of(S3.head_bucket(Bucket=name)), 200, "bucket still there")
    _, body = get_bytes(name, "k")
    eq(body, b"x", "object survives a refused DeleteBucket")


@check(always=True)
def setup_buckets():
    make_bucket(BUCKET)
    make_bucket(BUCKET2)


@check
def put_get_sizes():
    for i, n in enumerate([0, 1, 4 * KiB, 4 * MiB, 4 * MiB + 1, 9 * MiB]):
        body = data(n, 100 + i)
        key = f"sizes/{n}"
        r = S3.put_object(Bucket=BUCKET, Key=key, Body=body)
        eq(r["ETag"], md5_etag(body), f"PutObject ETag of {n} bytes")
        g, got = get_bytes(BUCKET, key)
        eq(got, body, f"GetObject body of {n} bytes")
        eq(g["ContentLength"], n, f"GetObject ContentLength of {n} bytes")
        eq(g["ETag"], md5_etag(body), f"GetObject ETag of {n} bytes")
        h = S3.head_object(Bucket=BUCKET, Key=key)
        eq(h["ContentLength"], n, f"HeadObject ContentLength of {n} bytes")
        eq(h["ETag"], md5_etag(body), f"HeadObject ETag of {n} bytes")
        expect(isinstance(h.get("LastModified"), datetime.datetime), "HeadObject LastModified missing")


@check
def content_type_and_metadata():
    body = data(1000, 2)
    S3.put_object(Bucket=BUCKET, Key="meta", Body=body, ContentType="application/x-cellar-test",
                  Metadata={"a": "b", "long-name": "some value"})
    g, got = get_bytes(BUCKET, "meta")
    eq(got, body, "body")
    eq(g["ContentType"], "application/x-cellar-test", "GetObject ContentType")
    eq(g["Metadata"], {"a": "b", "long-name": "some value"}, "GetObject Metadata")
    h = S3.head_object(Bucket=BUCKET, Key="meta")
    eq(h["ContentType"], "application/x-cellar-test", "HeadObject ContentType")
    eq(h["Metadata"], {"a": "b", "long-name": "some value"}, "HeadObject Metadata")
    eq(h["ContentLength"], 1000, "HeadObject ContentLength")
    # Without a ContentType, S3 stores binary/octet-stream (botocore sends none).
    S3.put_object(Bucket=BUCKET, Key="meta-none", Body=b"abc")
    h = S3.head_object(Bucket=BUCKET, Key="meta-none")
    eq(h["Metadata"], {}, "HeadObject Metadata of an object put without any")


RANGE_BODY = None


@check
def range_gets():
    global RANGE_BODY
    n = 9 * MiB
    body = RANGE_BODY = data(n, 3)
    S3.put_object(Bucket=BUCKET, Key="range", Body=body)
    cases = [
        ("bytes=0-0", 0, 0),
        ("bytes=100-4194403", 100, 4194403),
        ("bytes=-10", n - 10, n - 1),
        ("bytes=5-", 5, n - 1),
        ("bytes=9437000-99999999", 9437000, n - 1),  # end past the size is clamped
    ]
    for rng, first, last in cases:
        r, got = get_bytes(BUCKET, "range", Range=rng)
        eq(status_of(r), 206, f"{rng} status")
        eq(got, body[first : last + 1], f"{rng} bytes")
        eq(r["ContentRange"], f"bytes {first}-{last}/{n}", f"{rng} Content-Range")
        eq(r["ContentLength"], last - first + 1, f"{rng} Content-Length")
    expect_error("InvalidRange", S3.get_object, Bucket=BUCKET, Key="range", Range=f"bytes={n}-", status=416)
    expect_error("InvalidRange", S3.get_object, Bucket=BUCKET, Key="range", Range=f"bytes={n + 100}-{n + 200}",
                 status=416)


@check
def conditional_gets():
    body = data(5000, 4)
    etag = S3.put_object(Bucket=BUCKET, Key="cond", Body=body)["ETag"]
    r, got = get_bytes(BUCKET, "cond", IfMatch=etag)
    eq((status_of(r), got), (200, body), "IfMatch right ETag")
    expect_error("PreconditionFailed", S3.get_object, Bucket=BUCKET, Key="cond", IfMatch='"0123456789abcdef0123456789abcdef"',
                 status=412)
    expect_error("304", S3.get_object, Bucket=BUCKET, Key="cond", IfNoneMatch=etag, status=304)
    r, got = get_bytes(BUCKET, "cond", IfNoneMatch='"0123456789abcdef0123456789abcdef"')
    eq((status_of(r), got), (200, body), "IfNoneMatch other ETag")
    last_modified = S3.head_object(Bucket=BUCKET, Key="cond")["LastModified"]
    # Not modified since its own Last-Modified -> 304. (A date in the future is not used:
    # RFC 7232 lets a server ignore a future If-Modified-Since, and AWS S3 does.)
    expect_error("304", S3.get_object, Bucket=BUCKET, Key="cond", IfModifiedSince=last_modified, status=304)
    long_ago = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    r, got = get_bytes(BUCKET, "cond", IfModifiedSince=long_ago)
    eq((status_of(r), got), (200, body), "IfModifiedSince long ago")
    expect_error("PreconditionFailed", S3.get_object, Bucket=BUCKET, Key="cond", IfUnmodifiedSince=long_ago, status=412)
    r, got = get_bytes(BUCKET, "cond", IfUnmodifiedSince=last_modified)
    eq((status_of(r), got), (200, body), "IfUnmodifiedSince its own Last-Modified")
    # The same on HEAD (no body, so botocore reports the bare status as the code).
    expect_error(("412", "PreconditionFailed"), S3.head_object, Bucket=BUCKET, Key="cond",
                 IfMatch='"0123456789abcdef0123456789abcdef"', status=412)
    expect_error("304", S3.head_object, Bucket=BUCKET, Key="cond", IfNoneMatch=etag, status=304)


@check
def presigned_get():
    body = data(300 * KiB, 5)
    S3.put_object(Bucket=BUCKET, Key="presigned/obj", Body=body)
    url = S3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "presigned/obj"}, ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=60) as resp:
        eq(resp.status, 200, "presigned GET status")
        got = resp.read()
    eq(got, body, "presigned GET bytes")
    # A presigned PUT, and presigned listing pages (with a continuation token).
    put_url = S3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "presigned/put"}, ExpiresIn=300)
    req = urllib.request.Request(put_url, data=b"put by url", method="PUT")
    with urllib.request.urlopen(req, timeout=60) as resp:
        eq(resp.status, 200, "presigned PUT status")
    eq(S3.get_object(Bucket=BUCKET, Key="presigned/put")["Body"].read(), b"put by url", "presigned PUT bytes")
    seen, token = [], None
    while True:
        params = {"Bucket": BUCKET, "Prefix": "presigned/", "MaxKeys": 1}
        if token:
            params["ContinuationToken"] = token
        url = S3.generate_presigned_url("list_objects_v2", Params=params, ExpiresIn=300)
        with urllib.request.urlopen(url, timeout=60) as resp:
            text = resp.read().decode()
        seen += re.findall(r"<Key>([^<]*)</Key>", text)
        m = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", text)
        if not m:
            break
        token = m.group(1)
    eq(sorted(seen), ["presigned/obj", "presigned/put"], "presigned listing pages")


def _chunked_put(key, body, chunk_bytes, tamper=False):
    """PutObject with a streaming chunked payload (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), signed
    by hand: botocore only sends aws-chunked over HTTPS. Returns (status, body)."""
    import hmac
    import http.client
    import urllib.parse

    def h(b):
        return hashlib.sha256(b).hexdigest()

    def mac(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()

    url = urllib.parse.urlparse(ENDPOINT)
    host = url.netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{REGION}/s3/aws4_request"
    chunks = [body[i:i + chunk_bytes] for i in range(0, len(body), chunk_bytes)] + [b""]
    sig_len = 64
    encoded = sum(len(f"{len(c):x};chunk-signature=".encode()) + sig_len + 2 + len(c) + 2 for c in chunks)
    path = f"/{BUCKET}/{key}"
    headers = {
        "content-encoding": "aws-chunked",
        "content-length": str(encoded),
        "host": host,
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": amz_date,
        "x-amz-decoded-content-length": str(len(body)),
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["PUT", path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed,
                           "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"])
    key_date = mac(("AWS4" + SECRET_KEY).encode(), day)
    signing_key = mac(mac(mac(key_date, REGION), "s3"), "aws4_request")
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, h(canonical.encode())])
    seed = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed}, "
                                f"Signature={seed}")
    out, prev = bytearray(), seed
    for i, c in enumerate(chunks):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, h(b""), h(c)])
        sig = hmac.new(signing_key, sts.encode(), hashlib.sha256).hexdigest()
        if tamper and i == 1:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        out += f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
        prev = sig
    assert len(out) == encoded
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("PUT", path, body=bytes(out), headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


@check
def streaming_chunked_signatures():
    body = data(300 * KiB + 17, 11)
    status, text = _chunked_put("chunked/ok", body, 64 * KiB)
    eq(status, 200, f"chunked PUT status ({text[:200]!r})")
    eq(S3.get_object(Bucket=BUCKET, Key="chunked/ok")["Body"].read(), body, "chunked PUT bytes")
    # A chunk whose signature is wrong: refused, nothing stored.
    status, text = _chunked_put("chunked/bad", body, 64 * KiB, tamper=True)
    eq(status >= 400, True, f"tampered chunk answered {status} {text[:200]!r}")
    eq(b"SignatureDoesNotMatch" in text or status in (400, 403), True, f"tampered chunk: {text[:200]!r}")
    expect_error("NoSuchKey", S3.get_object, Bucket=BUCKET, Key="chunked/bad", status=404)


@check
def delete_object():
    S3.put_object(Bucket=BUCKET, Key="del/one", Body=b"bye")
    r = S3.delete_object(Bucket=BUCKET, Key="del/one")
    eq(status_of(r), 204, "DeleteObject status")
    expect_error("NoSuchKey", S3.get_object, Bucket=BUCKET, Key="del/one", status=404)
    expect_error("404", S3.head_object, Bucket=BUCKET, Key="del/one", status=404)
    # Deleting a key that does not exist succeeds (204) in S3.
    r = S3.delete_object(Bucket=BUCKET, Key="del/never-existed")
    eq(status_of(r), 204, "DeleteObject of a missing key status")


@check
def delete_objects():
    keys = ["dels/a", "dels/b", "dels/missing"]
    for k in keys[:2]:
        S3.put_object(Bucket=BUCKET, Key=k, Body=k.encode())
    r = S3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})
    eq(r.get("Errors", []), [], "DeleteObjects Errors")
    eq(sorted(d["Key"] for d in r.get("Deleted", [])), keys, "DeleteObjects Deleted keys")
    for k in keys:
        expect_error("NoSuchKey", S3.get_object, Bucket=BUCKET, Key=k, status=404)
    listed = S3.list_objects_v2(Bucket=BUCKET, Prefix="dels/").get("Contents", [])
    eq(listed, [], "listing after DeleteObjects")
    # Quiet mode reports only errors.
    S3.put_object(Bucket=BUCKET, Key="dels/q", Body=b"q")
    r = S3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "dels/q"}], "Quiet": True})
    eq(r.get("Deleted", []), [], "quiet DeleteObjects Deleted")
    eq(r.get("Errors", []), [], "quiet DeleteObjects Errors")
    expect_error("NoSuchKey", S3.get_object, Bucket=BUCKET, Key="dels/q")


@check
def copy_object():
    body = data(700 * KiB, 6)
    src = {"Bucket": BUCKET, "Key": "copy/src"}
    etag = S3.put_object(Bucket=BUCKET, Key="copy/src", Body=body, ContentType="image/x-test",
                         Metadata={"a": "b"})["ETag"]
    # Same bucket, metadata copied (the default directive is COPY).
    r = S3.copy_object(Bucket=BUCKET, Key="copy/dst", CopySource=src)
    eq(r["CopyObjectResult"]["ETag"], etag, "CopyObject result ETag")
    g, got = get_bytes(BUCKET, "copy/dst")
    eq(got, body, "same-bucket copy bytes")
    eq(g["Metadata"], {"a": "b"}, "same-bucket copy Metadata")
    eq(g["ContentType"], "image/x-test", "same-bucket copy ContentType")
    eq(g["ETag"], etag, "same-bucket copy ETag")
    # Across buckets, explicit COPY.
    S3.copy_object(Bucket=BUCKET2, Key="copied", CopySource=src, MetadataDirective="COPY")
    g, got = get_bytes(BUCKET2, "copied")
    eq(got, body, "cross-bucket copy bytes")
    eq(g["Metadata"], {"a": "b"}, "cross-bucket copy Metadata")
    # REPLACE: new metadata and content type only.
    S3.copy_object(Bucket=BUCKET2, Key="replaced", CopySource=src, MetadataDirective="REPLACE",
                   Metadata={"x": "y"}, ContentType="text/plain")
    g, got = get_bytes(BUCKET2, "replaced")
    eq(got, body, "REPLACE copy bytes")
    eq(g["Metadata"], {"x": "y"}, "REPLACE copy Metadata")
    eq(g["ContentType"], "text/plain", "REPLACE copy ContentType")
    # Copy onto itself with REPLACE rewrites the metadata in place.
    S3.copy_object(Bucket=BUCKET, Key="copy/src", CopySource=src, MetadataDirective="REPLACE",
                   Metadata={"new": "1"}, ContentType="text/x-new")
    g, got = get_bytes(BUCKET, "copy/src")
    eq(got, body, "self-copy bytes")
    eq(g["Metadata"], {"new": "1"}, "self-copy Metadata")
    eq(g["ContentType"], "text/x-new", "self-copy ContentType")
    # The source is unchanged by the other copies.
    _, got = get_bytes(BUCKET, "copy/dst")
    eq(got, body, "copy target bytes after the self-copy")


LIST_BUCKET = f"t-{RUN}-list"
LIST_KEYS = sorted(
    [f"a/{i}" for i in range(1, 9)]  # 8
    + [f"b/x/{i}" for i in range(1, 6)]  # 5
    + ["b/y", "c"]  # 2
    + [f"d/{i}" for i in range(1, 5)]  # 4
    + ["e", "f", "g", "h", "i", "j"]  # 6
)
assert len(LIST_KEYS) == 25


@check
def list_objects_v2():
    make_bucket(LIST_BUCKET)
    for i, k in enumerate(LIST_KEYS):
        S3.put_object(Bucket=LIST_BUCKET, Key=k, Body=data(i, 700 + i))
    r = S3.list_objects_v2(Bucket=LIST_BUCKET)
    eq([o["Key"] for o in r["Contents"]], LIST_KEYS, "full listing")
    eq(r["KeyCount"], 25, "KeyCount")
    eq(r["IsTruncated"], False, "IsTruncated")
    sizes = {o["Key"]: o["Size"] for o in r["Contents"]}
    eq(sizes, {k: i for i, k in enumerate(LIST_KEYS)}, "listed sizes")
    etags = {o["Key"]: o["ETag"] for o in r["Contents"]}
    eq(etags, {k: md5_etag(data(i, 700 + i)) for i, k in enumerate(LIST_KEYS)}, "listed ETags")
    # Prefix
    r = S3.list_objects_v2(Bucket=LIST_BUCKET, Prefix="a/")
    eq([o["Key"] for o in r["Contents"]], [k for k in LIST_KEYS if k.startswith("a/")], "Prefix a/")
    r = S3.list_objects_v2(Bucket=LIST_BUCKET, Prefix="zzz")
    eq((r.get("Contents", []), r["KeyCount"]), ([], 0), "Prefix matching nothing")
    # Delimiter
    r = S3.list_objects_v2(Bucket=LIST_BUCKET, Delimiter="/")
    eq([p["Prefix"] for p in r.get("CommonPrefixes", [])], ["a/", "b/", "d/"], "Delimiter / CommonPrefixes")
    eq([o["Key"] for o in r.get("Contents", [])], ["c", "e", "f", "g", "h", "i", "j"], "Delimiter / Contents")
    eq(r["KeyCount"], 10, "Delimiter / KeyCount (keys + prefixes)")
    r = S3.list_objects_v2(Bucket=LIST_BUCKET, Prefix="b/", Delimiter="/")
    eq([p["Prefix"] for p in r.get("CommonPrefixes", [])], ["b/x/"], "Prefix b/ Delimiter / CommonPrefixes")
    eq([o["Key"] for o in r.get("Contents", [])], ["b/y"], "Prefix b/ Delimiter / Contents")
    # MaxKeys=7 paging with continuation tokens
    keys, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = S3.list_objects_v2(Bucket=LIST_BUCKET, MaxKeys=7, **kw)
        pages += 1
        page = [o["Key"] for o in r.get("Contents", [])]
        expect(len(page) <= 7, f"page of {len(page)} keys with MaxKeys=7")
        eq(r["KeyCount"], len(page), "page KeyCount")
        keys += page
        if not r["IsTruncated"]:
            expect("NextContinuationToken" not in r, "NextContinuationToken on the last page")
            break
        token = r.get("NextContinuationToken")
        expect(token, "IsTruncated without NextContinuationToken")
        expect(pages < 20, "paging does not end")
    eq(keys, LIST_KEYS, "keys walked with MaxKeys=7")
    eq(pages, 4, "pages with MaxKeys=7 for 25 keys")
    # StartAfter
    r = S3.list_objects_v2(Bucket=LIST_BUCKET, StartAfter="b/x/5")
    eq([o["Key"] for o in r["Contents"]], [k for k in LIST_KEYS if k > "b/x/5"], "StartAfter b/x/5")
    r = S3.list_objects_v2(Bucket=LIST_BUCKET, StartAfter="b/x/3", MaxKeys=2)
    eq([o["Key"] for o in r["Contents"]], ["b/x/4", "b/x/5"], "StartAfter + MaxKeys")
    eq(r["IsTruncated"], True, "StartAfter + MaxKeys IsTruncated")
    # Delimiter with paging: prefixes count against MaxKeys and are not repeated.
    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = S3.list_objects_v2(Bucket=LIST_BUCKET, Delimiter="/", MaxKeys=2, **kw)
        pages += 1
        page = [o["Key"] for o in r.get("Contents", [])] + [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        expect(len(page) <= 2, f"page of {len(page)} entries with Delimiter and MaxKeys=2")
        seen += page
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
        expect(pages < 30, "paging does not end")
    eq(sorted(seen), sorted(["a/", "b/", "d/", "c", "e", "f", "g", "h", "i", "j"]),
       "entries walked with Delimiter / and MaxKeys=2")


@check
def list_objects_v1():
    # Marker paging without delimiter: the next marker is the last key of a page.
    keys, marker, pages = [], "", 0
    while True:
        r = S3.list_objects(Bucket=LIST_BUCKET, MaxKeys=7, Marker=marker)
        pages += 1
        page = [o["Key"] for o in r.get("Contents", [])]
        expect(len(page) <= 7, f"V1 page of {len(page)} keys with MaxKeys=7")
        keys += page
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or page[-1]
        expect(pages < 20, "V1 paging does not end")
    eq(keys, LIST_KEYS, "V1 keys walked with Marker")
    r = S3.list_objects(Bucket=LIST_BUCKET, Marker="d/4")
    eq([o["Key"] for o in r["Contents"]], [k for k in LIST_KEYS if k > "d/4"], "V1 Marker d/4")
    r = S3.list_objects(Bucket=LIST_BUCKET, Delimiter="/")
    eq([p["Prefix"] for p in r.get("CommonPrefixes", [])], ["a/", "b/", "d/"], "V1 Delimiter / CommonPrefixes")
    eq([o["Key"] for o in r.get("Contents", [])], ["c", "e", "f", "g", "h", "i", "j"], "V1 Delimiter / Contents")
    r = S3.list_objects(Bucket=LIST_BUCKET, Prefix="b/", Delimiter="/")
    eq([p["Prefix"] for p in r.get("CommonPrefixes", [])], ["b/x/"], "V1 Prefix b/ Delimiter / CommonPrefixes")
    # With a delimiter, a truncated V1 page carries NextMarker.
    seen, marker, pages = [], "", 0
    while True:
        r = S3.list_objects(Bucket=LIST_BUCKET, Delimiter="/", MaxKeys=3, Marker=marker)
        pages += 1
        seen += [o["Key"] for o in r.get("Contents", [])] + [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        if not r["IsTruncated"]:
            break
        expect(r.get("NextMarker"), "truncated V1 listing with a Delimiter lacks NextMarker")
        marker = r["NextMarker"]
        expect(pages < 30, "V1 paging does not end")
    eq(sorted(seen), sorted(["a/", "b/", "d/", "c", "e", "f", "g", "h", "i", "j"]),
       "V1 entries walked with Delimiter / and MaxKeys=3")


SPECIAL_KEYS = [
    "sp/with space",
    "sp/plus+sign",
    "sp/percent%41",
    "sp/unicodé/ключ",
    "sp/q?mark",
    "sp/hash#tag",
    "sp/amp&er=x",
    "sp/tilde~star*",
    "sp/lt<gt>quot\"",
]


@check
def special_character_keys():
    for i, k in enumerate(SPECIAL_KEYS):
        S3.put_object(Bucket=BUCKET, Key=k, Body=k.encode())
    for k in SPECIAL_KEYS:
        _, got = get_bytes(BUCKET, k)
        eq(got, k.encode(), f"GetObject {k!r}")
    want = sorted(SPECIAL_KEYS, key=lambda s: s.encode())
    r = S3.list_objects_v2(Bucket=BUCKET, Prefix="sp/")
    eq([o["Key"] for o in r["Contents"]], want, "ListObjectsV2 of keys with special characters")
    r = S3.list_objects(Bucket=BUCKET, Prefix="sp/")
    eq([o["Key"] for o in r["Contents"]], want, "ListObjects of keys with special characters")
    r = S3.list_objects_v2(Bucket=BUCKET, Prefix="sp/", Delimiter="/")
    eq([p["Prefix"] for p in r.get("CommonPrefixes", [])], ["sp/unicodé/"], "special CommonPrefixes")
    url = S3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "sp/plus+sign"}, ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=60) as resp:
        eq(resp.read(), b"sp/plus+sign", "presigned GET of a key with '+'")
    r = S3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in SPECIAL_KEYS]})
    eq(sorted(d["Key"] for d in r.get("Deleted", [])), sorted(SPECIAL_KEYS), "DeleteObjects of special keys")
    eq(S3.list_objects_v2(Bucket=BUCKET, Prefix="sp/").get("Contents", []), [], "special keys gone")


@check
def multipart_upload():
    key = "mpu/obj"
    parts = [data(5 * MiB, 11), data(5 * MiB, 12), data(5 * MiB, 13), data(1 * MiB, 14)]
    up = S3.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="application/x-mpu",
                                    Metadata={"m": "pu"})
    uid = up["UploadId"]
    eq((up["Bucket"], up["Key"]), (BUCKET, key), "CreateMultipartUpload Bucket/Key")
    etags = []
    for n, p in enumerate(parts, 1):
        r = S3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=p)
        eq(r["ETag"], md5_etag(p), f"UploadPart {n} ETag")
        etags.append(r["ETag"])
    lp = S3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)
    eq([(p["PartNumber"], p["Size"], p["ETag"]) for p in lp["Parts"]],
       [(n, len(p), etags[n - 1]) for n, p in enumerate(parts, 1)], "ListParts")
    lp = S3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid, MaxParts=2)
    eq([p["PartNumber"] for p in lp["Parts"]], [1, 2], "ListParts MaxParts=2")
    eq(lp["IsTruncated"], True, "ListParts MaxParts=2 IsTruncated")
    lp = S3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid, PartNumberMarker=lp["NextPartNumberMarker"])
    eq([p["PartNumber"] for p in lp["Parts"]], [3, 4], "ListParts after NextPartNumberMarker")
    ups = S3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    expect((key, uid) in [(u["Key"], u["UploadId"]) for u in ups], f"ListMultipartUploads lacks ours: {ups}")
    r = S3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    want_etag = '"' + hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + '-4"'
    eq(r["ETag"], want_etag, "CompleteMultipartUpload ETag")
    eq((r["Bucket"], r["Key"]), (BUCKET, key), "CompleteMultipartUpload Bucket/Key")
    g, got = get_bytes(BUCKET, key)
    eq(got, b"".join(parts), "completed object bytes")
    eq(g["ETag"], want_etag, "completed object ETag")
    eq(g["ContentLength"], 16 * MiB, "completed object ContentLength")
    eq(g["ContentType"], "application/x-mpu", "completed object ContentType")
    eq(g["Metadata"], {"m": "pu"}, "completed object Metadata")
    # A range across the part 1/part 2 boundary.
    r, got = get_bytes(BUCKET, key, Range=f"bytes={5 * MiB - 3}-{5 * MiB + 2}")
    eq(got, b"".join(parts)[5 * MiB - 3 : 5 * MiB + 3], "range across a part boundary")
    ups = S3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    expect(uid not in [u["UploadId"] for u in ups], "completed upload still listed")


@check
def upload_part_copy():
    src = data(6 * MiB, 21)
    S3.put_object(Bucket=BUCKET, Key="mpu/copysrc", Body=src)
    key = "mpu/copied"
    uid = S3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    r = S3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1,
                            CopySource={"Bucket": BUCKET, "Key": "mpu/copysrc"}, CopySourceRange="bytes=0-5242879")
    e1 = r["CopyPartResult"]["ETag"]
    eq(e1, md5_etag(src[: 5 * MiB]), "UploadPartCopy ETag")
    p2 = data(MiB + 7, 22)
    e2 = S3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    S3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                                            {"PartNumber": 2, "ETag": e2}]})
    g, got = get_bytes(BUCKET, key)
    eq(got, src[: 5 * MiB] + p2, "UploadPartCopy result bytes")
    expect(g["ETag"].endswith('-2"'), f"ETag of a 2-part object: {g['ETag']}")


@check
def multipart_abort():
    key = "mpu/aborted"
    uid = S3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    S3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=data(MiB, 31))
    r = S3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid)
    eq(status_of(r), 204, "AbortMultipartUpload status")
    ups = S3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    expect(uid not in [u["UploadId"] for u in ups], "aborted upload still listed")
    expect_error("NoSuchUpload", S3.list_parts, Bucket=BUCKET, Key=key, UploadId=uid, status=404)
    expect_error("NoSuchKey", S3.get_object, Bucket=BUCKET, Key=key, status=404)


def versions_of(bucket, key):
    r = S3.list_object_versions(Bucket=bucket, Prefix=key)
    vs = [v for v in r.get("Versions", []) if v["Key"] == key]
    dms = [d for d in r.get("DeleteMarkers", []) if d["Key"] == key]
    return vs, dms


@check
def versioning():
    vb = make_bucket(f"t-{RUN}-ver")
    S3.put_object(Bucket=vb, Key="pre", Body=b"before versioning")
    st = S3.get_bucket_versioning(Bucket=vb)
    expect("Status" not in st, f"a never-versioned bucket reports Status {st.get('Status')!r}")
    S3.put_bucket_versioning(Bucket=vb, VersioningConfiguration={"Status": "Enabled"})
    eq(S3.get_bucket_versioning(Bucket=vb).get("Status"), "Enabled", "GetBucketVersioning")
    bodies = [data(1000 + i, 40 + i) for i in range(3)]
    vids = []
    for b in bodies:
        r = S3.put_object(Bucket=vb, Key="k", Body=b)
        vid = r.get("VersionId")
        expect(vid and vid != "null", f"PutObject in a versioned bucket returned VersionId {vid!r}")
        vids.append(vid)
    eq(len(set(vids)), 3, "distinct version ids")
    vs, dms = versions_of(vb, "k")
    eq([v["VersionId"] for v in vs], vids[::-1], "ListObjectVersions order (newest first)")
    eq([v["IsLatest"] for v in vs], [True, False, False], "IsLatest flags")
    eq([v["ETag"] for v in vs], [md5_etag(b) for b in bodies[::-1]], "version ETags")
    eq([v["Size"] for v in vs], [len(b) for b in bodies[::-1]], "version sizes")
    eq(dms, [], "no delete markers yet")
    pre, _ = versions_of(vb, "pre")
    eq([v["VersionId"] for v in pre], ["null"], "version id of an object put before versioning")
    for vid, b in zip(vids, bodies):
        r, got = get_bytes(vb, "k", VersionId=vid)
        eq(got, b, f"GetObject VersionId={vid}")
        eq(r.get("VersionId"), vid, "GetObject response VersionId")
    h = S3.head_object(Bucket=vb, Key="k", VersionId=vids[0])
    eq((h["ContentLength"], h.get("VersionId"), h["ETag"]), (len(bodies[0]), vids[0], md5_etag(bodies[0])),
       "HeadObject VersionId")
    _, got = get_bytes(vb, "k")
    eq(got, bodies[2], "GetObject latest")
    # Delete without a version id -> delete marker.
    r = S3.delete_object(Bucket=vb, Key="k")
    eq(r.get("DeleteMarker"), True, "DeleteObject response DeleteMarker")
    marker = r.get("VersionId")
    expect(marker and marker not in vids, f"delete marker VersionId {marker!r}")
    expect_error("NoSuchKey", S3.get_object, Bucket=vb, Key="k", status=404)
    expect_error("404", S3.head_object, Bucket=vb, Key="k", status=404)
    vs, dms = versions_of(vb, "k")
    eq([(d["VersionId"], d["IsLatest"]) for d in dms], [(marker, True)], "DeleteMarkers")
    eq([v["VersionId"] for v in vs], vids[::-1], "versions kept under a delete marker")
    expect(not any(v["IsLatest"] for v in vs), "a version IsLatest under a delete marker")
    expect("k" not in [o["Key"] for o in S3.list_objects_v2(Bucket=vb).get("Contents", [])],
           "ListObjectsV2 shows a key whose latest version is a delete marker")
    _, got = get_bytes(vb, "k", VersionId=vids[0])
    eq(got, bodies[0], "older version readable under a delete marker")
    # GET of a delete marker by its version id: 405 MethodNotAllowed.
    expect_error("MethodNotAllowed", S3.get_object, Bucket=vb, Key="k", VersionId=marker, status=405)
    # Removing the marker brings the latest version back.
    r = S3.delete_object(Bucket=vb, Key="k", VersionId=marker)
    eq((r.get("DeleteMarker"), r.get("VersionId")), (True, marker), "DeleteObject of the marker response")
    _, got = get_bytes(vb, "k")
    eq(got, bodies[2], "latest body after removing the delete marker")
    vs, dms = versions_of(vb, "k")
    eq((dms, vs[0]["IsLatest"]), ([], True), "listing after removing the delete marker")
    # Deleting a specific version removes it for good.
    r = S3.delete_object(Bucket=vb, Key="k", VersionId=vids[1])
    eq(r.get("VersionId"), vids[1], "DeleteObject VersionId response")
    expect_error("NoSuchVersion", S3.get_object, Bucket=vb, Key="k", VersionId=vids[1], status=404)
    vs, dms = versions_of(vb, "k")
    eq(([v["VersionId"] for v in vs], dms), ([vids[2], vids[0]], []), "versions after deleting one")
    # Deleting the latest version makes the previous one current.
    S3.delete_object(Bucket=vb, Key="k", VersionId=vids[2])
    _, got = get_bytes(vb, "k")
    eq(got, bodies[0], "latest after deleting the newest version")


@check
def versioning_suspended():
    vb = f"t-{RUN}-ver"
    S3.put_bucket_versioning(Bucket=vb, VersioningConfiguration={"Status": "Suspended"})
    eq(S3.get_bucket_versioning(Bucket=vb).get("Status"), "Suspended", "GetBucketVersioning Suspended")
    kept, _ = versions_of(vb, "k")
    kept_ids = [v["VersionId"] for v in kept]
    b4, b5 = data(500, 50), data(600, 51)
    r = S3.put_object(Bucket=vb, Key="k", Body=b4)
    eq(r.get("VersionId", "null"), "null", "PutObject VersionId while suspended")
    vs, _ = versions_of(vb, "k")
    eq([(v["VersionId"], v["IsLatest"]) for v in vs], [("null", True)] + [(i, False) for i in kept_ids],
       "versions after a suspended put")
    # A second put replaces the null version rather than adding one.
    S3.put_object(Bucket=vb, Key="k", Body=b5)
    vs, _ = versions_of(vb, "k")
    eq([v["VersionId"] for v in vs], ["null"] + kept_ids, "versions after a second suspended put")
    _, got = get_bytes(vb, "k", VersionId="null")
    eq(got, b5, "GetObject VersionId=null")
    _, got = get_bytes(vb, "k")
    eq(got, b5, "GetObject latest while suspended")
    # A delete while suspended puts a null delete marker in place of the null version.
    r = S3.delete_object(Bucket=vb, Key="k")
    eq((r.get("DeleteMarker"), r.get("VersionId", "null")), (True, "null"), "suspended DeleteObject response")
    vs, dms = versions_of(vb, "k")
    eq([v["VersionId"] for v in vs], kept_ids, "versions after a suspended delete")
    eq([(d["VersionId"], d["IsLatest"]) for d in dms], [("null", True)], "delete markers after a suspended delete")


@check
def checksums():
    try:
        import botocore.httpchecksum as hc
        native = set(getattr(hc, "_CHECKSUM_CLS", {}).keys())
    except Exception:
        native = {"crc32", "sha256"}
    for i, alg in enumerate(["CRC32", "CRC32C", "SHA256"]):
        body = data(64 * KiB + i, 60 + i)
        want = checksum_value(alg, body)
        key = f"cks/{alg}"
        field = "Checksum" + alg
        if alg.lower() in native:
            r = S3.put_object(Bucket=BUCKET, Key=key, Body=body, ChecksumAlgorithm=alg)
        else:
            # botocore needs awscrt to compute CRC32C; send the value computed here.
            r = S3.put_object(Bucket=BUCKET, Key=key, Body=body, **{field: want})
        if field in r:
            eq(r[field], want, f"PutObject {field}")
        g, got = get_bytes(BUCKET, key, ChecksumMode="ENABLED")
        eq(got, body, f"{alg} object bytes")
        if field in g:
            eq(g[field], want, f"GetObject {field}")
        h = S3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        if field in h:
            eq(h[field], want, f"HeadObject {field}")


@check
def tagging():
    S3.put_object(Bucket=BUCKET, Key="tags/obj", Body=b"tagged")
    eq(S3.get_object_tagging(Bucket=BUCKET, Key="tags/obj")["TagSet"], [], "initial TagSet")
    tags = [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": "v 2"}]
    S3.put_object_tagging(Bucket=BUCKET, Key="tags/obj", Tagging={"TagSet": tags})
    got = S3.get_object_tagging(Bucket=BUCKET, Key="tags/obj")["TagSet"]
    eq(sorted((t["Key"], t["Value"]) for t in got), [("k1", "v1"), ("k2", "v 2")], "GetObjectTagging")
    g = S3.get_object(Bucket=BUCKET, Key="tags/obj")
    g["Body"].read()
    if "TagCount" in g:
        eq(g["TagCount"], 2, "GetObject TagCount")
    # Tags replace, not merge.
    S3.put_object_tagging(Bucket=BUCKET, Key="tags/obj", Tagging={"TagSet": [{"Key": "only", "Value": "one"}]})
    got = S3.get_object_tagging(Bucket=BUCKET, Key="tags/obj")["TagSet"]
    eq([(t["Key"], t["Value"]) for t in got], [("only", "one")], "PutObjectTagging replaces")
    r = S3.delete_object_tagging(Bucket=BUCKET, Key="tags/obj")
    eq(status_of(r), 204, "DeleteObjectTagging status")
    eq(S3.get_object_tagging(Bucket=BUCKET, Key="tags/obj")["TagSet"], [], "TagSet after DeleteObjectTagging")
    _, body = get_bytes(BUCKET, "tags/obj")
    eq(body, b"tagged", "object body after tagging changes")
    S3.put_object(Bucket=BUCKET, Key="tags/onput", Body=b"x", Tagging="k=v&second=2")
    got = S3.get_object_tagging(Bucket=BUCKET, Key="tags/onput")["TagSet"]
    eq(sorted((t["Key"], t["Value"]) for t in got), [("k", "v"), ("second", "2")], "tags given on PutObject")
    expect_error("NoSuchKey", S3.get_object_tagging, Bucket=BUCKET, Key="tags/missing", status=404)


@check(always=True)
def cleanup():
    for name in list(CREATED):
        purge_bucket(name)
        CREATED.remove(name)
    names = [b["Name"] for b in S3.list_buckets()["Buckets"]]
    left = [n for n in names if n.startswith(f"t-{RUN}-")]
    eq(left, [], "buckets of this run left after cleanup")


# ---------------------------------------------------------------- runner


def main(argv):
    global S3
    missing = [v for v in ("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY") if not os.environ.get(v)]
    if missing:
        print(f"FAIL setup: set {', '.join(missing)}", file=sys.stderr)
        return 2
    S3 = client()
    selected = [c for c in CHECKS if not argv or c.__name__ in ALWAYS or any(a in c.__name__ for a in argv)]
    keep_going = os.environ.get("S3_KEEP_GOING") == "1"
    passed, failures = 0, []
    for fn in selected:
        name = fn.__name__
        try:
            fn()
        except Fail as e:
            failures.append(f"{name}: {e}")
        except ClientError as e:
            code, st = err_code_status(e)
            failures.append(f"{name}: unexpected S3 error {code} (HTTP {st}): {e}")
        except Exception as e:  # noqa: BLE001 - any other failure is a failed check
            failures.append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
        else:
            print(f"ok {name}", flush=True)
            passed += 1
            continue
        print(f"FAIL {failures[-1]}", file=sys.stderr, flush=True)
        if not keep_going:
            break
    if failures:
        strays = [b["Name"] for b in S3.list_buckets()["Buckets"] if b["Name"].startswith(f"t-{RUN}-")]
        for b in sorted(set(CREATED) | set(strays)):
            try:
                purge_bucket(b)
            except Exception as e:  # noqa: BLE001 - best effort
                print(f"warning: could not remove bucket {b}: {e}", file=sys.stderr)
        print(f"boto3_suite: {passed} passed, {len(failures)} failed", file=sys.stderr)
        return 1
    print(f"boto3_suite: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
