#!/usr/bin/env python3
"""Bad-input S3 checks: every bad request must fail with the exact S3 error code and
must leave the server's visible state exactly as it was.

Run:  S3_ENDPOINT=http://127.0.0.1:PORT S3_ACCESS_KEY=... S3_SECRET_KEY=... \
      $VENV/bin/python cli/tests/s3/bad_input.py [name-substring ...]

Env: S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION (default us-east-1);
S3_KEEP_GOING=1 runs every case after a failure too.
Each case prints `ok <name>`; the first failure prints `FAIL <name>: <detail>` to
stderr and the script exits 1. Before and after each case the state is snapshotted
(every bucket's versions, delete markers, multipart uploads and their parts) and the
two snapshots must be equal, so the server must be used by this script alone while
it runs. Where AWS documents more than one acceptable code, the code seen is printed
as a `note` line.

Only boto3/botocore and the standard library are used; data comes from seeded
generators.
"""

import base64
import datetime
import hashlib
import http.client
import os
import random
import re
import secrets
import socket
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from unittest import mock

import botocore.auth
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import cellar_s3

KiB = 1024
MiB = 1024 * 1024

ENDPOINT = os.environ.get("S3_ENDPOINT", "").rstrip("/")
ACCESS_KEY = os.environ.get("S3_ACCESS_KEY", "")
SECRET_KEY = os.environ.get("S3_SECRET_KEY", "")
REGION = os.environ.get("S3_REGION") or "us-east-1"

RUN = secrets.token_hex(4)
FB = f"t-{RUN}-bad"  # plain bucket with fixture objects and uploads
VB = f"t-{RUN}-badver"  # versioned bucket
CREATED = []
FIX = {}  # fixture facts: upload ids, part etags, ...


class Fail(Exception):
    pass


def client(access=None, secret=None):
    return cellar_s3.client({"max_attempts": 2}, access=access, secret=secret)


S3 = None


# ---------------------------------------------------------------- helpers


def data(n, seed):
    return random.Random(seed).randbytes(n)


def md5_etag(b):
    return '"' + hashlib.md5(b).hexdigest() + '"'


def b64(b):
    return base64.b64encode(b).decode()


def expect(cond, detail):
    if not cond:
        raise Fail(detail)


def eq(got, want, what):
    if got != want:
        raise Fail(f"{what}: got {got!r}, want {want!r}")


def note(msg):
    print(f"note {msg}", flush=True)


def err_code_status(e):
    r = e.response
    return r.get("Error", {}).get("Code"), r.get("ResponseMetadata", {}).get("HTTPStatusCode")


def expect_error(codes, fn, *args, status=None, **kwargs):
    """fn must fail with one of `codes` (str or tuple) and HTTP `status` (int or tuple)
    if given. Returns the code; notes it when more than one code is accepted."""
    what = getattr(fn, "__name__", str(fn))
    if isinstance(codes, str):
        codes = (codes,)
    if isinstance(status, int):
        status = (status,)
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        code, st = err_code_status(e)
        if code not in codes:
            raise Fail(f"{what}: expected error {'/'.join(codes)}, got {code} (HTTP {st}): {e}")
        if status is not None and st not in status:
            raise Fail(f"{what}: error {code}: expected HTTP {'/'.join(map(str, status))}, got {st}")
        if len(codes) > 1:
            note(f"{what} -> {code} (HTTP {st})")
        return code
    raise Fail(f"{what}: expected error {'/'.join(codes)}, but the call succeeded")


def xml_code(body):
    m = re.search(rb"<Code>([^<]*)</Code>", body or b"")
    return m.group(1).decode() if m else None


def signed_request(method, path, query="", body=b"", headers=None, *, payload_hash=None, when=None):
    """Signs a request with botocore's S3 SigV4 signer and returns the prepared request.
    path is already URL-encoded; payload_hash overrides the signed x-amz-content-sha256;
    when overrides the signing time."""
    url = ENDPOINT + path + (("?" + query) if query else "")
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    auth = S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION)
    if payload_hash is not None:
        auth.payload = lambda request: payload_hash
    if when is not None:
        with mock.patch.object(botocore.auth, "get_current_datetime", lambda: when):
            auth.add_auth(req)
    else:
        auth.add_auth(req)
    return req.prepare()


def send(prepared, timeout=120):
    """Sends a prepared request with http.client; returns (status, body). Tolerates the
    server answering (and closing) before the whole body is sent."""
    u = urllib.parse.urlsplit(prepared.url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    target = u.path + (("?" + u.query) if u.query else "")
    try:
        try:
            conn.request(prepared.method, target, body=prepared.body, headers=dict(prepared.headers))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may reply early to a body it refuses; read that reply
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def urlopen(url, method="GET", body=None):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- state snapshot


def snapshot(s3=None):
    """Everything observable about the server's data: bucket names; per bucket every
    object version and delete marker (key, version id, etag, size, latest); every
    multipart upload (key, upload id) with its parts (number, etag, size)."""
    s3 = s3 or S3
    names = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    state = {"buckets": names}
    for name in names:
        versions, markers, uploads = [], [], []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for v in page.get("Versions", []):
                versions.append((v["Key"], v["VersionId"], v["ETag"], v["Size"], v["IsLatest"]))
            for d in page.get("DeleteMarkers", []):
                markers.append((d["Key"], d["VersionId"], d["IsLatest"]))
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for u in page.get("Uploads", []):
                parts = []
                for pp in s3.get_paginator("list_parts").paginate(Bucket=name, Key=u["Key"], UploadId=u["UploadId"]):
                    parts += [(p["PartNumber"], p["ETag"], p["Size"]) for p in pp.get("Parts", [])]
                uploads.append((u["Key"], u["UploadId"], tuple(parts)))
        state[name] = {"versions": sorted(versions), "markers": sorted(markers), "uploads": sorted(uploads)}
    return state


def diff(before, after):
    """What differs between two snapshots, entry by entry."""
    out = []
    if before["buckets"] != after["buckets"]:
        out.append(f"buckets {before['buckets']} -> {after['buckets']}")
    for name in sorted((set(before) | set(after)) - {"buckets"}):
        b, a = before.get(name, {}), after.get(name, {})
        for field in ("versions", "markers", "uploads"):
            gone = sorted(set(b.get(field, [])) - set(a.get(field, [])))
            new = sorted(set(a.get(field, [])) - set(b.get(field, [])))
            if gone or new:
                out.append(f"{name} {field}: gone {gone} new {new}")
    return "; ".join(out)[:3000]


# ---------------------------------------------------------------- fixture


def setup_fixture():
    for name in (FB, VB):
        S3.create_bucket(Bucket=name)
        CREATED.append(name)
    S3.put_object(Bucket=FB, Key="fixed/obj", Body=data(KiB, 1), Metadata={"a": "b"})
    S3.put_object(Bucket=FB, Key="x", Body=b"x")
    S3.put_object(Bucket=FB, Key="copy/src", Body=data(3000, 2))
    S3.put_bucket_versioning(Bucket=VB, VersioningConfiguration={"Status": "Enabled"})
    S3.put_object(Bucket=VB, Key="v", Body=b"one")
    S3.put_object(Bucket=VB, Key="v", Body=b"two")
    S3.put_object(Bucket=VB, Key="gone", Body=b"gone")
    S3.delete_object(Bucket=VB, Key="gone")
    # An upload that could be completed: part 1 of 5 MiB, part 2 of 1 KiB.
    uid = S3.create_multipart_upload(Bucket=FB, Key="mpu/ok")["UploadId"]
    p1, p2 = data(5 * MiB, 3), data(KiB, 4)
    e1 = S3.upload_part(Bucket=FB, Key="mpu/ok", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = S3.upload_part(Bucket=FB, Key="mpu/ok", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    FIX.update(ok_uid=uid, ok_etags=(e1, e2))
    # An upload whose first part is too small to complete.
    uid = S3.create_multipart_upload(Bucket=FB, Key="mpu/small")["UploadId"]
    s1 = S3.upload_part(Bucket=FB, Key="mpu/small", UploadId=uid, PartNumber=1, Body=data(KiB, 5))["ETag"]
    s2 = S3.upload_part(Bucket=FB, Key="mpu/small", UploadId=uid, PartNumber=2, Body=data(KiB, 6))["ETag"]
    FIX.update(small_uid=uid, small_etags=(s1, s2))


def purge_bucket(name):
    for page in S3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for u in page.get("Uploads", []):
            S3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
    objs = []
    for page in S3.get_paginator("list_object_versions").paginate(Bucket=name):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            objs.append({"Key": v["Key"], "VersionId": v["VersionId"]})
    for i in range(0, len(objs), 1000):
        S3.delete_objects(Bucket=name, Delete={"Objects": objs[i : i + 1000], "Quiet": True})
    for page in S3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for o in page.get("Contents", []):
            S3.delete_object(Bucket=name, Key=o["Key"])
    S3.delete_bucket(Bucket=name)


# ---------------------------------------------------------------- cases

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def wrong_secret_key():
    bad = client(secret=SECRET_KEY + "x")
    expect_error("SignatureDoesNotMatch", bad.put_object, Bucket=FB, Key="fixed/obj", Body=b"evil", status=403)
    expect_error("SignatureDoesNotMatch", bad.put_object, Bucket=FB, Key="new-by-wrong-secret", Body=b"e", status=403)
    expect_error("SignatureDoesNotMatch", bad.delete_object, Bucket=FB, Key="x", status=403)
    expect_error("SignatureDoesNotMatch", bad.create_bucket, Bucket=f"t-{RUN}-evil", status=403)


@case
def unknown_access_key():
    bad = client(access="AKIDCELLARNOSUCHKEY0", secret="whatever-secret")
    expect_error("InvalidAccessKeyId", bad.put_object, Bucket=FB, Key="fixed/obj", Body=b"evil", status=403)
    expect_error("InvalidAccessKeyId", bad.list_objects_v2, Bucket=FB, status=403)


@case
def anonymous_requests():
    st, body = urlopen(f"{ENDPOINT}/{FB}/fixed/obj", method="PUT", body=b"anonymous")
    eq((st, xml_code(body)), (403, "AccessDenied"), "anonymous PUT (status, code)")
    st, body = urlopen(f"{ENDPOINT}/{FB}/fixed/obj")
    eq((st, xml_code(body)), (403, "AccessDenied"), "anonymous GET (status, code)")


@case
def expired_presigned_urls():
    get_url = S3.generate_presigned_url("get_object", Params={"Bucket": FB, "Key": "fixed/obj"}, ExpiresIn=1)
    put_url = S3.generate_presigned_url("put_object", Params={"Bucket": FB, "Key": "fixed/obj"}, ExpiresIn=1)
    new_url = S3.generate_presigned_url("put_object", Params={"Bucket": FB, "Key": "presigned-new"}, ExpiresIn=1)
    time.sleep(2.5)
    for what, url, method, body in (("GET", get_url, "GET", None), ("PUT", put_url, "PUT", b"late"),
                                    ("PUT new key", new_url, "PUT", b"late")):
        st, resp = urlopen(url, method=method, body=body)
        code = xml_code(resp)
        note(f"expired presigned {what} -> HTTP {st} {code}")
        eq(st, 403, f"expired presigned {what} status")
        expect(code in ("AccessDenied", "ExpiredToken"), f"expired presigned {what} code {code!r}")


@case
def tampered_presigned_url():
    url = S3.generate_presigned_url("put_object", Params={"Bucket": FB, "Key": "fixed/obj"}, ExpiresIn=300)
    sig = re.search(r"X-Amz-Signature=([0-9a-f]+)", url).group(1)
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    st, resp = urlopen(url.replace(sig, flipped), method="PUT", body=b"tampered")
    eq((st, xml_code(resp)), (403, "SignatureDoesNotMatch"), "tampered presigned PUT (status, code)")
    # A presigned GET used for a PUT: the method is part of the signature.
    url = S3.generate_presigned_url("get_object", Params={"Bucket": FB, "Key": "fixed/obj"}, ExpiresIn=300)
    st, resp = urlopen(url, method="PUT", body=b"wrong method")
    eq((st, xml_code(resp)), (403, "SignatureDoesNotMatch"), "presigned GET used to PUT (status, code)")


@case
def content_sha256_mismatch():
    body = data(4 * KiB, 10)
    other = hashlib.sha256(b"something else").hexdigest()
    st, resp = send(signed_request("PUT", f"/{FB}/fixed/obj", body=body, payload_hash=other))
    eq((st, xml_code(resp)), (400, "XAmzContentSHA256Mismatch"), "PUT with a signed x-amz-content-sha256 of other bytes")


@case
def request_time_too_skewed():
    when = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=1)
    st, resp = send(signed_request("PUT", f"/{FB}/fixed/obj", body=b"from the past", when=when))
    eq((st, xml_code(resp)), (403, "RequestTimeTooSkewed"), "PUT signed an hour ago (status, code)")


@case
def wrong_content_md5():
    body = data(2 * KiB, 11)
    bad_md5 = b64(hashlib.md5(b"different bytes").digest())
    expect_error(("BadDigest", "InvalidDigest"), S3.put_object, Bucket=FB, Key="fixed/obj", Body=body,
                 ContentMD5=bad_md5, status=400)
    expect_error(("BadDigest", "InvalidDigest"), S3.put_object, Bucket=FB, Key="md5-new", Body=body,
                 ContentMD5=bad_md5, status=400)
    expect_error("InvalidDigest", S3.put_object, Bucket=FB, Key="fixed/obj", Body=body,
                 ContentMD5="not-base64-md5!", status=400)
    uid = FIX["ok_uid"]
    expect_error(("BadDigest", "InvalidDigest"), S3.upload_part, Bucket=FB, Key="mpu/ok", UploadId=uid,
                 PartNumber=2, Body=body, ContentMD5=bad_md5, status=400)


@case
def wrong_checksums():
    body = data(3 * KiB, 12)
    wrong_crc = b64(b"\x01\x02\x03\x04")
    wrong_sha = b64(hashlib.sha256(b"not the body").digest())
    for key in ("fixed/obj", "crc-new"):
        expect_error(("BadDigest", "InvalidRequest"), S3.put_object, Bucket=FB, Key=key, Body=body,
                     ChecksumCRC32=wrong_crc, status=400)
        expect_error(("BadDigest", "InvalidRequest"), S3.put_object, Bucket=FB, Key=key, Body=body,
                     ChecksumCRC32C=wrong_crc, status=400)
        expect_error(("BadDigest", "InvalidRequest"), S3.put_object, Bucket=FB, Key=key, Body=body,
                     ChecksumSHA256=wrong_sha, status=400)
    expect_error(("BadDigest", "InvalidRequest"), S3.upload_part, Bucket=FB, Key="mpu/ok", UploadId=FIX["ok_uid"],
                 PartNumber=2, Body=body, ChecksumCRC32=wrong_crc, status=400)


@case
def truncated_body():
    """A PUT whose connection ends before Content-Length bytes arrived must not store
    anything (the server may answer 400 IncompleteBody, or nothing)."""
    body = data(64 * KiB, 13)
    for key in ("fixed/obj", "truncated-new"):
        prep = signed_request("PUT", f"/{FB}/{key}", body=body)
        u = urllib.parse.urlsplit(prep.url)
        head = f"PUT {u.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in prep.headers.items())
        if "host" not in {k.lower() for k in prep.headers}:
            head += f"Host: {u.netloc}\r\n"
        if "content-length" not in {k.lower() for k in prep.headers}:
            head += f"Content-Length: {len(body)}\r\n"
        sock = socket.create_connection((u.hostname, u.port), timeout=20)
        try:
            sock.sendall(head.encode() + b"\r\n" + body[: len(body) // 2])
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            except (socket.timeout, ConnectionResetError):
                pass
        finally:
            sock.close()
        status = reply.split(b"\r\n", 1)[0].decode(errors="replace") if reply else "no reply"
        note(f"truncated PUT {key} -> {status} {xml_code(reply)}")
        expect(not reply.startswith(b"HTTP/1.1 2"), f"truncated PUT answered {status}")


@case
def missing_bucket():
    nb = f"t-{RUN}-nosuch"
    expect_error("NoSuchBucket", S3.get_object, Bucket=nb, Key="k", status=404)
    expect_error("NoSuchBucket", S3.put_object, Bucket=nb, Key="k", Body=b"x", status=404)
    expect_error("NoSuchBucket", S3.list_objects_v2, Bucket=nb, status=404)
    expect_error("NoSuchBucket", S3.list_objects, Bucket=nb, status=404)
    expect_error("NoSuchBucket", S3.delete_object, Bucket=nb, Key="k", status=404)
    expect_error("NoSuchBucket", S3.delete_bucket, Bucket=nb, status=404)
    expect_error("NoSuchBucket", S3.create_multipart_upload, Bucket=nb, Key="k", status=404)
    expect_error(("404", "NoSuchBucket"), S3.head_bucket, Bucket=nb, status=404)


@case
def bucket_deleted_after_a_put():
    # PutObject trusts a bucket it saw exist for a few seconds (its commit checks again); a
    # bucket deleted through this frontend is forgotten at once.
    b = f"t-{RUN}-deleted"
    S3.create_bucket(Bucket=b)
    S3.put_object(Bucket=b, Key="k", Body=b"first")
    S3.delete_object(Bucket=b, Key="k")
    S3.delete_bucket(Bucket=b)
    expect_error("NoSuchBucket", S3.put_object, Bucket=b, Key="k", Body=b"again", status=404)
    expect_error("NoSuchBucket", S3.put_object, Bucket=b, Key="k2", Body=b"x" * 70000, status=404)


@case
def missing_key():
    expect_error("NoSuchKey", S3.get_object, Bucket=FB, Key="no/such/key", status=404)
    expect_error("NoSuchKey", S3.get_object, Bucket=FB, Key="no/such/key", Range="bytes=0-10", status=404)
    expect_error("404", S3.head_object, Bucket=FB, Key="no/such/key", status=404)
    expect_error("NoSuchKey", S3.copy_object, Bucket=FB, Key="copy/dst", CopySource={"Bucket": FB, "Key": "no/such/key"},
                 status=404)
    expect_error("NoSuchKey", S3.get_object, Bucket=VB, Key="gone", status=404)
    expect_error("NoSuchKey", S3.get_object_tagging, Bucket=FB, Key="no/such/key", status=404)


@case
def malformed_delete_xml():
    body = b"<Delete><Object><Key>x</Oops>"
    headers = {"Content-MD5": b64(hashlib.md5(body).digest()), "Content-Type": "application/xml"}
    st, resp = send(signed_request("POST", f"/{FB}", query="delete", body=body, headers=headers))
    eq((st, xml_code(resp)), (400, "MalformedXML"), "DeleteObjects with malformed XML (status, code)")
    body = b"<Delete><Object><Key>x</Key></Object>"  # unclosed root
    headers["Content-MD5"] = b64(hashlib.md5(body).digest())
    st, resp = send(signed_request("POST", f"/{FB}", query="delete", body=body, headers=headers))
    eq((st, xml_code(resp)), (400, "MalformedXML"), "DeleteObjects with an unclosed root (status, code)")


@case
def delete_objects_over_1000():
    keys = ["x", "fixed/obj"] + [f"k{i}" for i in range(999)]
    expect_error("MalformedXML", S3.delete_objects, Bucket=FB, Delete={"Objects": [{"Key": k} for k in keys]},
                 status=400)


@case
def oversized_complete_xml():
    uid = FIX["ok_uid"]
    e1 = FIX["ok_etags"][0]
    parts, size, n = [b"<CompleteMultipartUpload>"], 0, 0
    while size <= 21 * MiB:
        n += 1
        p = f"<Part><PartNumber>{n}</PartNumber><ETag>{e1}</ETag></Part>".encode()
        parts.append(p)
        size += len(p)
    parts.append(b"</CompleteMultipartUpload>")
    body = b"".join(parts)
    st, resp = send(signed_request("POST", f"/{FB}/mpu/ok", query=f"uploadId={urllib.parse.quote(uid, safe='')}",
                                   body=body, headers={"Content-Type": "application/xml"}))
    code = xml_code(resp)
    note(f"CompleteMultipartUpload with {len(body)} bytes of XML -> HTTP {st} {code}")
    expect(400 <= st < 500, f"oversized CompleteMultipartUpload: HTTP {st} {code}")
    expect(code in ("MalformedXML", "EntityTooLarge", "InvalidRequest", "MaxMessageLengthExceeded", "InvalidPart",
                    "InvalidArgument"), f"oversized CompleteMultipartUpload code {code!r}")
    S3.list_buckets()  # the server still answers


def complete(uid, key, parts):
    return S3.complete_multipart_upload(Bucket=FB, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})


@case
def complete_multipart_errors():
    uid, (e1, e2) = FIX["ok_uid"], FIX["ok_etags"]
    expect_error("InvalidPartOrder", complete, uid, "mpu/ok", [(2, e2), (1, e1)], status=400)
    expect_error("InvalidPart", complete, uid, "mpu/ok", [(1, '"0123456789abcdef0123456789abcdef"'), (2, e2)], status=400)
    expect_error("InvalidPart", complete, uid, "mpu/ok", [(1, e1), (3, e2)], status=400)
    # No parts at all (no MultipartUpload element, as botocore sends it when omitted).
    expect_error("MalformedXML", S3.complete_multipart_upload, Bucket=FB, Key="mpu/ok", UploadId=uid, status=400)
    expect_error("NoSuchUpload", complete, "cellar-no-such-upload-id", "mpu/ok", [(1, e1)], status=404)
    # The upload id belongs to another key.
    expect_error("NoSuchUpload", complete, uid, "mpu/other-key", [(1, e1), (2, e2)], status=404)
    s1, s2 = FIX["small_etags"]
    expect_error("EntityTooSmall", complete, FIX["small_uid"], "mpu/small", [(1, s1), (2, s2)], status=400)


@case
def upload_part_errors():
    expect_error("NoSuchUpload", S3.upload_part, Bucket=FB, Key="mpu/ok", UploadId="cellar-no-such-upload-id",
                 PartNumber=1, Body=b"x", status=404)
    expect_error("NoSuchUpload", S3.abort_multipart_upload, Bucket=FB, Key="mpu/ok",
                 UploadId="cellar-no-such-upload-id", status=404)
    expect_error("NoSuchUpload", S3.list_parts, Bucket=FB, Key="mpu/ok", UploadId="cellar-no-such-upload-id",
                 status=404)
    for n in (0, 10001):
        expect_error("InvalidArgument", S3.upload_part, Bucket=FB, Key="mpu/ok", UploadId=FIX["ok_uid"],
                     PartNumber=n, Body=b"x", status=400)


@case
def bucket_errors():
    expect_error(("BucketAlreadyOwnedByYou", "BucketAlreadyExists"), S3.create_bucket, Bucket=FB, status=409)
    for name in ("Bad_Name", "ab", "bad..dots", "-leading-dash", "x" * 64):
        expect_error("InvalidBucketName", S3.create_bucket, Bucket=name, status=400)


@case
def object_limits():
    expect_error("KeyTooLongError", S3.put_object, Bucket=FB, Key="k" * 1025, Body=b"x", status=400)
    expect_error("MetadataTooLarge", S3.put_object, Bucket=FB, Key="fixed/obj", Body=b"x",
                 Metadata={"big": "v" * 2100}, status=400)
    # Copying an object onto itself without changing anything is refused.
    expect_error("InvalidRequest", S3.copy_object, Bucket=FB, Key="copy/src",
                 CopySource={"Bucket": FB, "Key": "copy/src"}, status=400)
    expect_error("InvalidRange", S3.get_object, Bucket=FB, Key="copy/src", Range="bytes=3000-", status=416)


# ---------------------------------------------------------------- runner


def main(argv):
    global S3
    missing = [v for v in ("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY") if not os.environ.get(v)]
    if missing:
        print(f"FAIL setup: set {', '.join(missing)}", file=sys.stderr)
        return 2
    S3 = client()
    keep_going = os.environ.get("S3_KEEP_GOING") == "1"
    selected = [c for c in CASES if not argv or any(a in c.__name__ for a in argv)]
    passed, failures = 0, []

    def run(name, fn, snap=True):
        nonlocal passed
        try:
            before = snapshot() if snap else None
            try:
                fn()
            except (Fail, ClientError) as e:
                # Report a state change along with the wrong answer that caused it.
                if snap:
                    after = snapshot()
                    if after != before:
                        raise Fail(f"{e if isinstance(e, Fail) else repr(e)}; and the state changed: "
                                   f"{diff(before, after)}") from e
                raise
            if snap:
                after = snapshot()
                if after != before:
                    raise Fail(f"state changed: {diff(before, after)}")
        except Fail as e:
            failures.append(f"{name}: {e}")
        except ClientError as e:
            code, st = err_code_status(e)
            failures.append(f"{name}: unexpected S3 error {code} (HTTP {st}): {e}")
        except Exception as e:  # noqa: BLE001 - any other failure is a failed case
            traceback.print_exc(file=sys.stderr)
            failures.append(f"{name}: {type(e).__name__}: {e}")
        else:
            print(f"ok {name}", flush=True)
            passed += 1
            return True
        print(f"FAIL {failures[-1]}", file=sys.stderr, flush=True)
        return False

    if run("setup_fixture", setup_fixture, snap=False):
        for fn in selected:
            if not run(fn.__name__, fn) and not keep_going:
                break

    def cleanup():
        for name in list(CREATED):
            purge_bucket(name)
            CREATED.remove(name)
        # A bucket a failing case made by mistake (say, a PutObject that created one).
        strays = [b["Name"] for b in S3.list_buckets()["Buckets"] if b["Name"].startswith(f"t-{RUN}-")]
        for name in strays:
            purge_bucket(name)
        left = [b["Name"] for b in S3.list_buckets()["Buckets"] if b["Name"].startswith(f"t-{RUN}-")]
        eq(left, [], "buckets of this run left after cleanup")

    run("cleanup", cleanup, snap=False)
    if failures:
        print(f"bad_input: {passed} passed, {len(failures)} failed", file=sys.stderr)
        return 1
    print(f"bad_input: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
