"""The boto3 client the S3 test scripts in this directory share.

The Rust tests (cli/tests/s3.rs) run each script with the cell's S3 endpoint and a key in
the environment: S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY and S3_REGION (default
us-east-1). A script imports this module from its own directory (Python puts a script's
directory first on its path).
"""

import os

import boto3
from botocore.config import Config


def client(retries, access=None, secret=None, pool=10):
    """A path-style SigV4 client of the cell, with bounded connect (10 s) and read (120 s)
    timeouts. `retries` is botocore's retry setting, as each script wants it (one attempt
    when the server's own answer is checked); `access` and `secret` replace the
    environment's key (a test of a wrong key); `pool` bounds the open connections."""
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"].rstrip("/"),
        aws_access_key_id=access or os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=secret or os.environ["S3_SECRET_KEY"],
        region_name=os.environ.get("S3_REGION") or "us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries=retries,
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=pool,
        ),
    )
