#!/usr/bin/env python3
"""Bucket lifecycle rules through S3, on a cell whose masters run lifecycle passes every
0.5 s with days of LIFECYCLE_DAY_MS (env, e.g. 3000) ms:

- rule "logs": prefix logs/, NoncurrentDays 1, ExpiredObjectDeleteMarker, AbortIncompleteMultipartUpload 1
- rule "tmp":  prefix tmp/, Expiration Days 1
- nothing under keep/ is ever touched.

Checks the configuration reads back, that unsupported rules are refused with the proper
code and change nothing, then waits (bounded) until every due expiry happened and checks
that what must stay is byte-exact. Prints "ok <check>" lines; exits non-zero on a failure.

Env: S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY (as the other scripts).
"""
import os
import sys
import time

import botocore

import cellar_s3

DEADLINE_S = 90


def client():
    return cellar_s3.client({"max_attempts": 1})


def code_of(f):
    try:
        f()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return "no error"


def versions(s3, bucket):
    """(key, version id, is marker, is latest) of every version and marker."""
    r = s3.list_object_versions(Bucket=bucket)
    out = [(v["Key"], v["VersionId"], False, v["IsLatest"]) for v in r.get("Versions", [])]
    out += [(m["Key"], m["VersionId"], True, m["IsLatest"]) for m in r.get("DeleteMarkers", [])]
    return sorted(out)


def uploads(s3, bucket):
    return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def main():
    s3 = client()
    b = "lifecycle"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    body = {k: os.urandom(1000 + i) for i, k in enumerate(["logs/a1", "logs/a2", "keep/b", "tmp/t", "logs/c"])}
    s3.put_object(Bucket=b, Key="logs/a", Body=body["logs/a1"])
    s3.put_object(Bucket=b, Key="logs/a", Body=body["logs/a2"])  # logs/a's first version is noncurrent
    s3.put_object(Bucket=b, Key="keep/b", Body=body["keep/b"])
    s3.put_object(Bucket=b, Key="keep/b", Body=body["keep/b"] + b"2")  # keep/ keeps noncurrent versions
    s3.put_object(Bucket=b, Key="tmp/t", Body=body["tmp/t"])
    s3.put_object(Bucket=b, Key="logs/c", Body=body["logs/c"])
    s3.delete_object(Bucket=b, Key="logs/c")  # a marker over a noncurrent version
    part = os.urandom(5 << 20)
    for key in ["logs/u", "keep/u"]:
        u = s3.create_multipart_upload(Bucket=b, Key=key)
        s3.upload_part(Bucket=b, Key=key, UploadId=u["UploadId"], PartNumber=1, Body=part)
    before = versions(s3, b)

    # Unsupported or malformed rules are refused and change nothing.
    base = {"ID": "x", "Status": "Enabled", "Filter": {"Prefix": "logs/"}}
    refused = {
        "a transition": ({**base, "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}, "NotImplemented"),
        "a tag filter": ({**base, "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Expiration": {"Days": 1}}, "NotImplemented"),
        "an expiration date": ({**base, "Expiration": {"Date": "2030-01-01T00:00:00Z"}}, "NotImplemented"),
        "no action": (base, "InvalidArgument"),
        "zero days": ({**base, "Expiration": {"Days": 0}}, "InvalidArgument"),
    }
    for what, (rule, code) in refused.items():
        got = code_of(lambda: s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [rule]}))
        assert got == code, f"{what}: {got}, expected {code}"
        got = code_of(lambda: s3.get_bucket_lifecycle_configuration(Bucket=b))
        assert got == "NoSuchLifecycleConfiguration", f"{what} left a configuration: {got}"
    print(f"ok unsupported rules refused ({len(refused)} cases), nothing stored")
    got = code_of(lambda: s3.put_bucket_lifecycle_configuration(
        Bucket="no-such-bucket", LifecycleConfiguration={"Rules": [{**base, "Expiration": {"Days": 1}}]}))
    assert got == "NoSuchBucket", got
    assert versions(s3, b) == before

    rules = [
        {
            "ID": "logs",
            "Status": "Enabled",
            "Filter": {"Prefix": "logs/"},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}},
        {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": "keep/"}, "Expiration": {"Days": 1}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
    assert [(r["ID"], r["Status"], r["Filter"]["Prefix"]) for r in got] == [
        ("logs", "Enabled", "logs/"), ("tmp", "Enabled", "tmp/"), ("off", "Disabled", "keep/")], got
    assert got[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1, got
    assert got[0]["Expiration"]["ExpiredObjectDeleteMarker"] is True, got
    assert got[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1, got
    assert got[1]["Expiration"]["Days"] == 1, got
    print("ok the configuration reads back")

    # Due: logs/a's noncurrent version goes; logs/c's version goes, then its lone marker;
    # logs/u is aborted; tmp/t gets a delete marker (its version stays, noncurrent).
    deadline = time.time() + DEADLINE_S
    while True:
        now = versions(s3, b)
        keys = [(k, marker, latest) for k, _, marker, latest in now]
        want = [
            ("keep/b", False, False), ("keep/b", False, True), ("logs/a", False, True),
            ("tmp/t", False, False), ("tmp/t", True, True),
        ]
        if sorted(keys) == sorted(want) and uploads(s3, b) == ["keep/u"]:
            break
        assert time.time() < deadline, f"lifecycle did not expire what was due: {keys}, uploads {uploads(s3, b)}"
        time.sleep(0.5)
    print("ok noncurrent versions, lone delete markers, stale uploads and expired current versions went")
    assert s3.get_object(Bucket=b, Key="logs/a")["Body"].read() == body["logs/a2"]
    assert s3.get_object(Bucket=b, Key="keep/b")["Body"].read() == body["keep/b"] + b"2"
    tmp = [v for k, v, marker, _ in versions(s3, b) if k == "tmp/t" and not marker]
    assert s3.get_object(Bucket=b, Key="tmp/t", VersionId=tmp[0])["Body"].read() == body["tmp/t"]
    assert code_of(lambda: s3.get_object(Bucket=b, Key="tmp/t")) == "NoSuchKey"
    u = s3.list_multipart_uploads(Bucket=b)["Uploads"][0]
    parts = s3.list_parts(Bucket=b, Key="keep/u", UploadId=u["UploadId"])["Parts"]
    assert [p["Size"] for p in parts] == [5 << 20], parts
    print("ok what the rules do not cover is intact")

    s3.delete_bucket_lifecycle(Bucket=b)
    assert code_of(lambda: s3.get_bucket_lifecycle_configuration(Bucket=b)) == "NoSuchLifecycleConfiguration"
    print("ok the configuration is deleted")
    print("lifecycle: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL {e}")
        sys.exit(1)
