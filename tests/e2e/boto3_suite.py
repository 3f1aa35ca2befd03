#!/usr/bin/env python3
"""boto3 against a gridstore S3 endpoint: the edge cases SDK users hit.

Usage: ENDPOINT=http://127.0.0.1:PORT AK=... SK=... python3 tests/e2e/boto3_suite.py [CASE ...]

Each case runs on its own; a failing case prints why and the rest go on.
The last line is "boto3: N passed, N failed"; the exit code is non-zero when
a case failed. Retries are off so that a server error is seen, not hidden.
"""
import base64
import concurrent.futures
import datetime
import hashlib
import io
import os
import random
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["ENDPOINT"].rstrip("/")
AK = os.environ["AK"]
SK = os.environ["SK"]
REGION = os.environ.get("REGION", "us-east-1")
RUN_ID = os.environ.get("RUN_ID", f"{int(time.time())}{os.getpid()}")

_host = urllib.parse.urlparse(ENDPOINT).hostname
if _host not in ("127.0.0.1", "localhost"):
    sys.exit(f"refusing to target {ENDPOINT}: only 127.0.0.1 is allowed")

MiB = 1024 * 1024


def make_client(ak=AK, sk=SK, **cfg):
    opts = dict(
        region_name=REGION,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
    )
    opts.update(cfg)
    config = Config(**opts)
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        config=config,
    )


s3 = make_client()


# ---------------------------------------------------------------- helpers

class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def short(v, n=600):
    r = repr(v)
    return r if len(r) <= n else r[:n] + f"... ({len(r)} chars)"


def eq(want, got, what):
    if want != got:
        raise Failure(f"{what}: expected {short(want)}, got {short(got)}")


def sha(b):
    return hashlib.sha256(b).hexdigest()


def rand(n, seed):
    return random.Random(seed).randbytes(n)


def md5_etag(b):
    return '"' + hashlib.md5(b).hexdigest() + '"'


def multipart_etag(parts):
    d = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(d).hexdigest()}-{len(parts)}"'


def err_of(e):
    return (e.response.get("Error", {}).get("Code"),
            e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def expect_error(fn, code, status, **kw):
    """Call fn(**kw) and require a ClientError with this code and status.
    code may be a tuple of accepted codes, or None to check the status only."""
    try:
        fn(**kw)
    except ClientError as e:
        got_code, got_status = err_of(e)
        codes = code if isinstance(code, tuple) else (code,)
        if (code is not None and got_code not in codes) or got_status != status:
            raise Failure(
                f"{fn.__name__}: expected {code} / HTTP {status}, "
                f"got {got_code} / HTTP {got_status}: {e}")
        return e
    raise Failure(f"{fn.__name__}: expected {code} / HTTP {status}, but it succeeded")


_SOFT = []


def soft(fn, *a, **kw):
    """Run one independent check; record its failure and go on, so that a
    case reports every broken expectation, not only the first."""
    try:
        return fn(*a, **kw)
    except Failure as e:
        _SOFT.append(str(e))
    except ClientError as e:
        _SOFT.append(f"unexpected error: {e}")


def abort_quietly(key, uid):
    """Clean-up after a check that expected a completion to fail (which,
    when the check failed, may have completed the upload)."""
    try:
        s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid)
    except ClientError:
        pass


def get_bytes(bucket, key, **kw):
    r = s3.get_object(Bucket=bucket, Key=key, **kw)
    return r, r["Body"].read()


def new_bucket(tag):
    name = f"e2e-boto3-{tag}-{RUN_ID}"
    s3.create_bucket(Bucket=name)
    return name


def empty_and_delete(bucket):
    try:
        pag = s3.get_paginator("list_object_versions")
        for page in pag.paginate(Bucket=bucket):
            objs = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if objs:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
        for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        s3.delete_bucket(Bucket=bucket)
    except ClientError as e:
        print(f"  (cleanup of {bucket}: {e})")


CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    CRC32C_TABLE.append(_c)


def crc32c_b64(data):
    crc = 0xFFFFFFFF
    t = CRC32C_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def sha256_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# ---------------------------------------------------------------- cases

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


BUCKET = f"e2e-boto3-{RUN_ID}"


@case
def bucket_basics():
    s3.create_bucket(Bucket=BUCKET)
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check(BUCKET in names, f"{BUCKET} not in list_buckets: {names}")
    s3.head_bucket(Bucket=BUCKET)
    loc = s3.get_bucket_location(Bucket=BUCKET).get("LocationConstraint")
    check(loc in (None, "", "us-east-1"), f"LocationConstraint for us-east-1: {loc!r}")


@case
def multipart_out_of_order():
    key = "mp/out-of-order.bin"
    parts = [rand(5 * MiB, 1), rand(5 * MiB, 2), rand(MiB + 7, 3)]
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="application/x-test")
    uid = up["UploadId"]
    etags = {}
    for n in (3, 1, 2):
        r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=parts[n - 1])
        eq(md5_etag(parts[n - 1]), r["ETag"], f"ETag of part {n}")
        etags[n] = r["ETag"]
    lp = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)
    eq([1, 2, 3], [p["PartNumber"] for p in lp["Parts"]], "list_parts part numbers")
    eq([len(p) for p in parts], [p["Size"] for p in lp["Parts"]], "list_parts sizes")
    eq([etags[n] for n in (1, 2, 3)], [p["ETag"] for p in lp["Parts"]], "list_parts ETags")
    # paged list_parts
    lp1 = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid, MaxParts=2)
    eq(True, lp1.get("IsTruncated"), "list_parts MaxParts=2 IsTruncated")
    eq([1, 2], [p["PartNumber"] for p in lp1["Parts"]], "list_parts first page")
    lp2 = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid, MaxParts=2,
                        PartNumberMarker=lp1["NextPartNumberMarker"])
    eq([3], [p["PartNumber"] for p in lp2["Parts"]], "list_parts second page")
    ups = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="mp/")["Uploads"]
    check(any(u["UploadId"] == uid and u["Key"] == key for u in ups),
          f"upload {uid} not in list_multipart_uploads: {ups}")
    r = s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]})
    eq(multipart_etag(parts), r["ETag"], "complete_multipart_upload ETag")
    h = s3.head_object(Bucket=BUCKET, Key=key)
    eq(sum(map(len, parts)), h["ContentLength"], "ContentLength")
    eq(multipart_etag(parts), h["ETag"], "head ETag")
    eq("application/x-test", h["ContentType"], "ContentType set at create")
    hp = s3.head_object(Bucket=BUCKET, Key=key, PartNumber=2)
    eq(len(parts[1]), hp["ContentLength"], "head PartNumber=2 ContentLength")
    eq(3, hp["PartsCount"], "head PartNumber=2 PartsCount")
    gp = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=2)
    eq(sha(parts[1]), sha(gp["Body"].read()), "get PartNumber=2 body")
    _, body = get_bytes(BUCKET, key)
    eq(sha(b"".join(parts)), sha(body), "sha256 of the completed object")
    ups = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="mp/").get("Uploads", [])
    check(all(u["UploadId"] != uid for u in ups), "completed upload still listed")


@case
def multipart_missing_part():
    key = "mp/missing-part.bin"
    p1, p2 = rand(5 * MiB, 4), rand(1000, 5)
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    fake = '"' + "0" * 32 + '"'
    soft(expect_error, s3.complete_multipart_upload, "InvalidPart", 400, Bucket=BUCKET, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2},
                     {"PartNumber": 3, "ETag": fake}]})
    # an uploaded part named with the wrong ETag
    soft(expect_error, s3.complete_multipart_upload, "InvalidPart", 400, Bucket=BUCKET, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": fake}]})
    # the upload survives a refused completion
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    _, body = get_bytes(BUCKET, key)
    eq(sha(p1 + p2), sha(body), "sha256 after completing with the right parts")


@case
def multipart_too_small():
    key = "mp/too-small.bin"
    a, b = rand(MiB, 6), rand(MiB, 7)
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    ea = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=a)["ETag"]
    eb = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=b)["ETag"]
    soft(expect_error, s3.complete_multipart_upload, "EntityTooSmall", 400, Bucket=BUCKET, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 1, "ETag": ea}, {"PartNumber": 2, "ETag": eb}]})
    soft(expect_error, s3.head_object, "404", 404, Bucket=BUCKET, Key=key)
    abort_quietly(key, uid)


@case
def multipart_part_order():
    key = "mp/bad-order.bin"
    # both parts big enough, so the order is the only thing wrong
    a, b = rand(5 * MiB, 8), rand(5 * MiB, 9)
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    ea = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=a)["ETag"]
    eb = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=b)["ETag"]
    soft(expect_error, s3.complete_multipart_upload, "InvalidPartOrder", 400, Bucket=BUCKET, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [
                     {"PartNumber": 2, "ETag": eb}, {"PartNumber": 1, "ETag": ea}]})
    abort_quietly(key, uid)


@case
def multipart_single_small_part_and_overwrite():
    # one part may be below 5 MiB: it is the last one
    key = "mp/single.bin"
    a = rand(12345, 10)
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    ea = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=a)["ETag"]
    # re-uploading a part number replaces it
    a2 = rand(23456, 11)
    ea2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=a2)["ETag"]
    check(ea != ea2, "re-uploaded part has the same ETag")
    lp = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]
    eq([(1, len(a2), ea2)], [(p["PartNumber"], p["Size"], p["ETag"]) for p in lp],
       "list_parts after re-upload")
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": ea2}]})
    _, body = get_bytes(BUCKET, key)
    eq(sha(a2), sha(body), "sha256 of a one-part upload")


@case
def multipart_abort():
    key = "mp/aborted.bin"
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=rand(1000, 12))
    r = s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid)
    eq(204, r["ResponseMetadata"]["HTTPStatusCode"], "abort status")
    soft(expect_error, s3.list_parts, "NoSuchUpload", 404, Bucket=BUCKET, Key=key, UploadId=uid)
    soft(expect_error, s3.upload_part, "NoSuchUpload", 404, Bucket=BUCKET, Key=key, UploadId=uid,
                 PartNumber=2, Body=b"x")
    soft(expect_error, s3.complete_multipart_upload, "NoSuchUpload", 404, Bucket=BUCKET, Key=key,
                 UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
    soft(expect_error, s3.list_parts, "NoSuchUpload", 404, Bucket=BUCKET, Key=key,
                 UploadId="no-such-upload-id")
    ups = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    check(all(u["UploadId"] != uid for u in ups), "aborted upload still listed")
    soft(expect_error, s3.head_object, "404", 404, Bucket=BUCKET, Key=key)


@case
def transfer_manager_concurrent_multipart():
    data = rand(21 * MiB + 3, 13)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                         max_concurrency=4, use_threads=True)
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "src"), os.path.join(d, "dst")
        with open(src, "wb") as f:
            f.write(data)
        s3.upload_file(src, BUCKET, "tm/big.bin", Config=cfg)
        h = s3.head_object(Bucket=BUCKET, Key="tm/big.bin")
        eq(len(data), h["ContentLength"], "ContentLength")
        check(h["ETag"].endswith('-5"'), f"ETag of a 5-part upload: {h['ETag']}")
        s3.download_file(BUCKET, "tm/big.bin", dst, Config=cfg)  # concurrent ranged GETs
        with open(dst, "rb") as f:
            eq(sha(data), sha(f.read()), "sha256 after download_file")


PG = f"e2e-boto3-pg-{RUN_ID}"
N_KEYS = 1500


def _pg_keys():
    return [f"p/{i:05d}" for i in range(N_KEYS)]


@case
def pagination_1500_keys():
    s3.create_bucket(Bucket=PG)
    keys = _pg_keys()

    def put(k):
        s3.put_object(Bucket=PG, Key=k, Body=k.encode())

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(put, keys))
    for k in ("q/one", "q/two", "top"):
        put(k)
    print(f"  put {N_KEYS + 3} objects in {time.time() - t0:.1f}s")

    pag = s3.get_paginator("list_objects_v2")
    pages = list(pag.paginate(Bucket=PG, Prefix="p/"))
    eq([1000, 500], [p["KeyCount"] for p in pages], "list_objects_v2 KeyCount per page")
    got = [o["Key"] for p in pages for o in p.get("Contents", [])]
    eq(keys, got, "list_objects_v2 keys (sorted, complete, no duplicates)")
    check(pages[0]["IsTruncated"] and "NextContinuationToken" in pages[0],
          "first page not truncated / no NextContinuationToken")
    eq(False, pages[1]["IsTruncated"], "last page IsTruncated")

    pages = list(pag.paginate(Bucket=PG, Prefix="p/", PaginationConfig={"PageSize": 250}))
    eq([250] * 6, [len(p.get("Contents", [])) for p in pages], "PageSize=250 page sizes")
    eq(keys, [o["Key"] for p in pages for o in p["Contents"]], "PageSize=250 keys")

    r = s3.list_objects_v2(Bucket=PG, Prefix="p/", StartAfter="p/00999")
    eq(keys[1000:], [o["Key"] for o in r["Contents"]], "StartAfter=p/00999")

    # v1 with an explicit Marker loop
    got, marker, n_pages = [], "", 0
    while True:
        r = s3.list_objects(Bucket=PG, Prefix="p/", Marker=marker, MaxKeys=400)
        n_pages += 1
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or r["Contents"][-1]["Key"]
        check(n_pages < 20, "v1 listing does not end")
    eq(4, n_pages, "v1 pages of 400")
    eq(keys, got, "v1 keys with Marker")
    # v1 paginator
    got = [o["Key"] for p in s3.get_paginator("list_objects").paginate(
        Bucket=PG, Prefix="p/", PaginationConfig={"PageSize": 700}) for o in p["Contents"]]
    eq(keys, got, "v1 paginator keys")

    # delimiter: common prefixes and a top-level key
    r = s3.list_objects_v2(Bucket=PG, Delimiter="/")
    eq(["p/", "q/"], [c["Prefix"] for c in r.get("CommonPrefixes", [])], "CommonPrefixes")
    eq(["top"], [o["Key"] for o in r.get("Contents", [])], "top-level keys with Delimiter")
    # delimiter paging: common prefixes count against MaxKeys
    r = s3.list_objects_v2(Bucket=PG, Delimiter="/", MaxKeys=1)
    eq(True, r["IsTruncated"], "Delimiter + MaxKeys=1 IsTruncated")
    seen = [c["Prefix"] for c in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
    r = s3.list_objects_v2(Bucket=PG, Delimiter="/", MaxKeys=1,
                           ContinuationToken=r["NextContinuationToken"])
    seen += [c["Prefix"] for c in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
    eq(["p/", "q/"], seen, "first two entries one at a time with Delimiter")


@case
def delete_objects_batch_1000():
    keys = _pg_keys()
    r = s3.delete_objects(Bucket=PG, Delete={"Objects": [{"Key": k} for k in keys[:1000]]})
    eq([], r.get("Errors", []), "delete_objects Errors")
    eq(sorted(keys[:1000]), sorted(d["Key"] for d in r.get("Deleted", [])), "Deleted keys")
    left = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=PG, Prefix="p/")
            for o in p.get("Contents", [])]
    eq(keys[1000:], left, "keys left after deleting 1000")
    # quiet mode, with a key that does not exist (not an error in S3)
    r = s3.delete_objects(Bucket=PG, Delete={
        "Objects": [{"Key": k} for k in keys[1000:] + ["p/never-existed", "q/one", "q/two", "top"]],
        "Quiet": True})
    eq([], r.get("Errors", []), "quiet delete_objects Errors")
    eq([], r.get("Deleted", []), "quiet delete_objects reports no Deleted")
    eq(0, s3.list_objects_v2(Bucket=PG)["KeyCount"], "keys left after deleting all")
    s3.delete_bucket(Bucket=PG)
    soft(expect_error, s3.head_bucket, "404", 404, Bucket=PG)


@case
def conditional_get():
    key = "cond/obj"
    body = rand(3000, 14)
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]
    soft(eq, md5_etag(body), etag, "PUT ETag")
    soft(expect_error, s3.get_object, "304", 304, Bucket=BUCKET, Key=key, IfNoneMatch=etag)
    soft(expect_error, s3.get_object, "PreconditionFailed", 412, Bucket=BUCKET, Key=key,
                 IfMatch='"0123456789abcdef0123456789abcdef"')
    r, b = get_bytes(BUCKET, key, IfMatch=etag)
    soft(eq, sha(body), sha(b), "IfMatch with the right ETag")
    r, b = get_bytes(BUCKET, key, IfNoneMatch='"0123456789abcdef0123456789abcdef"')
    soft(eq, sha(body), sha(b), "IfNoneMatch with another ETag")
    # the browser revalidation: If-Modified-Since = the Last-Modified it was
    # given (whole seconds, while the store may keep finer times)
    last_modified = s3.head_object(Bucket=BUCKET, Key=key)["LastModified"]
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    soft(expect_error, s3.get_object, "304", 304, Bucket=BUCKET, Key=key,
         IfModifiedSince=last_modified)
    soft(expect_error, s3.get_object, "PreconditionFailed", 412, Bucket=BUCKET, Key=key,
                 IfUnmodifiedSince=past)
    get_bytes(BUCKET, key, IfModifiedSince=past)
    soft(expect_error, s3.head_object, "304", 304, Bucket=BUCKET, Key=key, IfNoneMatch=etag)
    soft(expect_error, s3.head_object, "412", 412, Bucket=BUCKET, Key=key, IfMatch='"nope"')


AWKWARD_KEYS = [
    "with space.txt",
    "dir with space/file name.txt",
    "plus+sign+key",
    "percent%20literal%",
    "percent%2Fslash%2",
    "unicode-\u00fcn\u00efc\u00f8d\u00e9-\u65e5\u672c\u8a9e-\U0001F642.txt",
    "a//b",
    "//leading-slashes",
    "trailing-slash-dir/",
    "tilde~key",
    "query?and=amp&x=1",
    "hash#fragment",
    "semi;colon:and,comma",
    "quote'single\"double",
    "brackets[1](2){3}<4>",
    "star*dollar$at@bang!",
    "caret^pipe|backtick`",
    "back\\slash",
    " leading and trailing space ",
    "e\u0301-combining-accent",
]


@case
def awkward_keys():
    prefix = "awk/"
    bodies = {prefix + k: rand(100 + i, 100 + i) for i, k in enumerate(AWKWARD_KEYS)}
    for k, b in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=k, Body=b)
    errors = []
    for k, b in bodies.items():
        try:
            _, got = get_bytes(BUCKET, k)
            if sha(got) != sha(b):
                errors.append(f"GET {k!r}: wrong content")
            h = s3.head_object(Bucket=BUCKET, Key=k)
            if h["ContentLength"] != len(b):
                errors.append(f"HEAD {k!r}: length {h['ContentLength']}")
            # server-side copy with the key in x-amz-copy-source
            s3.copy_object(Bucket=BUCKET, Key="awkcopy/" + k,
                           CopySource={"Bucket": BUCKET, "Key": k})
            _, got = get_bytes(BUCKET, "awkcopy/" + k)
            if sha(got) != sha(b):
                errors.append(f"COPY {k!r}: wrong content")
        except ClientError as e:
            errors.append(f"{k!r}: {e}")
    want = sorted(bodies)
    v2 = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    if v2 != want:
        errors.append(f"list_objects_v2: missing {sorted(set(want) - set(v2))}, "
                      f"extra {sorted(set(v2) - set(want))}, order ok={sorted(v2) == v2}")
    v1 = [o["Key"] for o in s3.list_objects(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    if v1 != want:
        errors.append(f"list_objects (v1): missing {sorted(set(want) - set(v1))}, "
                      f"extra {sorted(set(v1) - set(want))}")
    # each key as its own prefix finds exactly itself (and the copy is elsewhere)
    for k in bodies:
        got = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=k).get("Contents", [])]
        if k not in got:
            errors.append(f"list with Prefix={k!r} does not return it: {got}")
    r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in bodies]
                                                 + [{"Key": "awkcopy/" + k} for k in bodies]})
    if r.get("Errors"):
        errors.append(f"delete_objects errors: {r['Errors']}")
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix="awk").get("KeyCount")
    if left:
        errors.append(f"{left} awkward keys left after delete_objects")
    check(not errors, "\n    ".join([""] + errors))


@case
def zero_byte_object():
    r = s3.put_object(Bucket=BUCKET, Key="zero", Body=b"")
    eq('"d41d8cd98f00b204e9800998ecf8427e"', r["ETag"], "ETag of an empty object")
    h = s3.head_object(Bucket=BUCKET, Key="zero")
    eq(0, h["ContentLength"], "ContentLength")
    r, b = get_bytes(BUCKET, "zero")
    eq(b"", b, "body")
    soft(expect_error, s3.get_object, "InvalidRange", 416, Bucket=BUCKET, Key="zero", Range="bytes=0-0")
    # an empty multipart-less copy
    s3.copy_object(Bucket=BUCKET, Key="zero-copy", CopySource={"Bucket": BUCKET, "Key": "zero"})
    eq(0, s3.head_object(Bucket=BUCKET, Key="zero-copy")["ContentLength"], "copy ContentLength")


@case
def ranges():
    body = rand(100_000, 15)
    s3.put_object(Bucket=BUCKET, Key="range/obj", Body=body)
    for rng, want in [("bytes=0-0", body[:1]), ("bytes=99999-99999", body[-1:]),
                      ("bytes=10-19", body[10:20]), ("bytes=-1", body[-1:]),
                      ("bytes=-100", body[-100:]), ("bytes=99990-", body[99990:]),
                      ("bytes=99990-200000", body[99990:]), ("bytes=-200000", body)]:
        r, b = get_bytes(BUCKET, "range/obj", Range=rng)
        soft(eq, sha(want), sha(b), f"content of {rng}")
        soft(eq, 206, r["ResponseMetadata"]["HTTPStatusCode"], f"status of {rng}")
        soft(eq, len(want), r["ContentLength"], f"ContentLength of {rng}")
    r, _ = get_bytes(BUCKET, "range/obj", Range="bytes=10-19")
    soft(eq, "bytes 10-19/100000", r["ContentRange"], "ContentRange")
    soft(expect_error, s3.get_object, "InvalidRange", 416, Bucket=BUCKET, Key="range/obj",
                 Range="bytes=100000-")


@case
def errors():
    missing = f"e2e-boto3-missing-{RUN_ID}"
    soft(expect_error, s3.head_object, "404", 404, Bucket=BUCKET, Key="no/such/key")
    soft(expect_error, s3.get_object, "NoSuchKey", 404, Bucket=BUCKET, Key="no/such/key")
    soft(expect_error, s3.get_object, "NoSuchBucket", 404, Bucket=missing, Key="k")
    soft(expect_error, s3.head_bucket, "404", 404, Bucket=missing)
    soft(expect_error, s3.put_object, "NoSuchBucket", 404, Bucket=missing, Key="k", Body=b"x")
    soft(expect_error, s3.list_objects_v2, "NoSuchBucket", 404, Bucket=missing)
    soft(expect_error, s3.delete_bucket, "NoSuchBucket", 404, Bucket=missing)
    soft(expect_error, s3.create_bucket, "InvalidBucketName", 400, Bucket="Bad_Bucket_Name")
    soft(expect_error, s3.create_bucket, "InvalidBucketName", 400, Bucket="ab")
    s3.put_object(Bucket=BUCKET, Key="errors/keep", Body=b"x")
    soft(expect_error, s3.delete_bucket, "BucketNotEmpty", 409, Bucket=BUCKET)
    # deleting a missing key is not an error
    r = s3.delete_object(Bucket=BUCKET, Key="no/such/key")
    eq(204, r["ResponseMetadata"]["HTTPStatusCode"], "DELETE of a missing key")
    # credentials
    soft(expect_error, make_client(sk=SK + "x").list_buckets, "SignatureDoesNotMatch", 403)
    soft(expect_error, make_client(ak="AKIANOSUCHKEY0000000").list_buckets, "InvalidAccessKeyId", 403)
    soft(expect_error, make_client(sk=SK + "x").get_object, ("SignatureDoesNotMatch",), 403,
                 Bucket=BUCKET, Key="errors/keep")
    # request ids: in every answer's x-amz-request-id, and an error's XML
    # names the same one (botocore takes the body's when both are there)
    e = expect_error(s3.get_object, "NoSuchKey", 404, Bucket=BUCKET, Key="no/such/key")
    meta = e.response.get("ResponseMetadata", {})
    soft(eq, meta.get("HTTPHeaders", {}).get("x-amz-request-id"), meta.get("RequestId"),
         "error RequestId (body) against x-amz-request-id (header)")
    soft(check, bool(meta.get("RequestId")), "an error without a request id")
    ok = s3.head_object(Bucket=BUCKET, Key="errors/keep")["ResponseMetadata"]
    soft(check, bool(ok.get("HTTPHeaders", {}).get("x-amz-request-id")),
         "a success without x-amz-request-id")


@case
def copy_object_metadata():
    body = rand(20_000, 16)
    s3.put_object(Bucket=BUCKET, Key="copy/src", Body=body, ContentType="text/plain",
                  Metadata={"color": "blue", "n": "1"})
    src_etag = s3.head_object(Bucket=BUCKET, Key="copy/src")["ETag"]
    # default directive COPY keeps metadata
    s3.copy_object(Bucket=BUCKET, Key="copy/same", CopySource={"Bucket": BUCKET, "Key": "copy/src"})
    h = s3.head_object(Bucket=BUCKET, Key="copy/same")
    soft(eq, {"color": "blue", "n": "1"}, h["Metadata"], "metadata after COPY")
    soft(eq, "text/plain", h["ContentType"], "ContentType after COPY")
    # REPLACE
    r = s3.copy_object(Bucket=BUCKET, Key="copy/replaced",
                       CopySource={"Bucket": BUCKET, "Key": "copy/src"},
                       MetadataDirective="REPLACE", Metadata={"shape": "round"},
                       ContentType="application/json")
    soft(eq, src_etag, r["CopyObjectResult"]["ETag"], "CopyObjectResult ETag")
    h = s3.head_object(Bucket=BUCKET, Key="copy/replaced")
    soft(eq, {"shape": "round"}, h["Metadata"], "metadata after REPLACE")
    soft(eq, "application/json", h["ContentType"], "ContentType after REPLACE")
    soft(eq, src_etag, h["ETag"], "ETag of the copy")
    _, b = get_bytes(BUCKET, "copy/replaced")
    soft(eq, sha(body), sha(b), "sha256 of the copy")
    # in place: REPLACE is allowed, a plain self-copy is not
    s3.copy_object(Bucket=BUCKET, Key="copy/src", CopySource={"Bucket": BUCKET, "Key": "copy/src"},
                   MetadataDirective="REPLACE", Metadata={"color": "red"})
    soft(eq, {"color": "red"}, s3.head_object(Bucket=BUCKET, Key="copy/src")["Metadata"],
       "metadata after an in-place REPLACE")
    _, b = get_bytes(BUCKET, "copy/src")
    soft(eq, sha(body), sha(b), "content after an in-place REPLACE")
    soft(expect_error, s3.copy_object, "InvalidRequest", 400, Bucket=BUCKET, Key="copy/src",
                 CopySource={"Bucket": BUCKET, "Key": "copy/src"})
    soft(expect_error, s3.copy_object, "NoSuchKey", 404, Bucket=BUCKET, Key="copy/x",
                 CopySource={"Bucket": BUCKET, "Key": "copy/no-such-source"})
    soft(expect_error, s3.copy_object, "PreconditionFailed", 412, Bucket=BUCKET, Key="copy/x",
                 CopySource={"Bucket": BUCKET, "Key": "copy/src"},
                 CopySourceIfMatch='"0123456789abcdef0123456789abcdef"')


@case
def headers_and_metadata():
    s3.put_object(Bucket=BUCKET, Key="hdr/obj", Body=b"hello", ContentType="text/x-test",
                  ContentDisposition='attachment; filename="x y.txt"', CacheControl="max-age=60",
                  ContentLanguage="en", Metadata={"k1": "v1", "mixed-Case": "Value With Spaces"})
    h = s3.head_object(Bucket=BUCKET, Key="hdr/obj")
    soft(eq, "text/x-test", h["ContentType"], "ContentType")
    soft(eq, 'attachment; filename="x y.txt"', h.get("ContentDisposition"), "ContentDisposition")
    soft(eq, "max-age=60", h.get("CacheControl"), "CacheControl")
    soft(eq, "en", h.get("ContentLanguage"), "ContentLanguage")
    soft(eq, {"k1": "v1", "mixed-case": "Value With Spaces"}, h["Metadata"], "user metadata")
    check(isinstance(h["LastModified"], datetime.datetime), "LastModified")
    # response header overrides on GET
    r = s3.get_object(Bucket=BUCKET, Key="hdr/obj", ResponseContentType="application/x-over",
                      ResponseContentDisposition="inline")
    soft(eq, "application/x-over", r["ContentType"], "response-content-type override")
    soft(eq, "inline", r.get("ContentDisposition"), "response-content-disposition override")


@case
def object_tagging():
    s3.put_object(Bucket=BUCKET, Key="tag/obj", Body=b"tagged")
    tags = [{"Key": "project", "Value": "grid"}, {"Key": "with space", "Value": "v 2"}]
    s3.put_object_tagging(Bucket=BUCKET, Key="tag/obj", Tagging={"TagSet": tags})
    got = s3.get_object_tagging(Bucket=BUCKET, Key="tag/obj")["TagSet"]
    soft(eq, sorted(tags, key=lambda t: t["Key"]), sorted(got, key=lambda t: t["Key"]), "TagSet")
    r = s3.get_object(Bucket=BUCKET, Key="tag/obj")
    soft(eq, 2, r.get("TagCount"), "TagCount (x-amz-tagging-count) on GET")
    s3.delete_object_tagging(Bucket=BUCKET, Key="tag/obj")
    soft(eq, [], s3.get_object_tagging(Bucket=BUCKET, Key="tag/obj")["TagSet"], "TagSet after delete")
    # tags given at PUT
    s3.put_object(Bucket=BUCKET, Key="tag/put", Body=b"x", Tagging="a=1&b=two%20words")
    got = s3.get_object_tagging(Bucket=BUCKET, Key="tag/put")["TagSet"]
    soft(eq, [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "two words"}],
       sorted(got, key=lambda t: t["Key"]), "TagSet from PUT x-amz-tagging")
    soft(expect_error, s3.get_object_tagging, "NoSuchKey", 404, Bucket=BUCKET, Key="tag/missing")


def _checksum_case(algo, field, expected_fn):
    body = rand(70_000, 17 + len(algo))
    key = f"cks/{algo}"
    want = expected_fn(body)
    r = s3.put_object(Bucket=BUCKET, Key=key, Body=body, ChecksumAlgorithm=algo)
    soft(eq, want, r.get(field), f"{field} in the PUT response")
    r = s3.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    b = r["Body"].read()
    soft(eq, sha(body), sha(b), "sha256 of the body")
    soft(eq, want, r.get(field), f"{field} in the GET response with ChecksumMode=ENABLED")
    h = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    soft(eq, want, h.get(field), f"{field} in the HEAD response with ChecksumMode=ENABLED")
    soft(eq, "FULL_OBJECT", h.get("ChecksumType"), "ChecksumType of a single PUT")
    a = s3.get_object_attributes(Bucket=BUCKET, Key=key,
                                 ObjectAttributes=["ETag", "Checksum", "ObjectSize"])
    soft(eq, len(body), a.get("ObjectSize"), "get_object_attributes ObjectSize")
    soft(eq, md5_etag(body).strip('"'), a.get("ETag", "").strip('"'),
         "get_object_attributes ETag")
    soft(eq, {field: want, "ChecksumType": "FULL_OBJECT"}, a.get("Checksum"),
         "get_object_attributes Checksum")


@case
def multipart_composite_checksum():
    # S3's COMPOSITE multipart checksum: the digest of the parts' digests,
    # "-N"; returned on completion, on HEAD with ChecksumMode and by
    # GetObjectAttributes, with ChecksumType COMPOSITE
    key = "mp/composite-sha256.bin"
    parts = [rand(5 * MiB, 31), rand(1000, 32)]
    digests = [hashlib.sha256(p).digest() for p in parts]
    want = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-2"
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key,
                                     ChecksumAlgorithm="SHA256")["UploadId"]
    done = []
    for n, (p, d) in enumerate(zip(parts, digests), start=1):
        r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=p,
                           ChecksumAlgorithm="SHA256",
                           ChecksumSHA256=base64.b64encode(d).decode())
        done.append({"PartNumber": n, "ETag": r["ETag"],
                     "ChecksumSHA256": r["ChecksumSHA256"]})
    r = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                     MultipartUpload={"Parts": done})
    soft(eq, want, r.get("ChecksumSHA256"), "composite checksum on completion")
    soft(eq, "COMPOSITE", r.get("ChecksumType"), "ChecksumType on completion")
    h = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    soft(eq, want, h.get("ChecksumSHA256"), "composite checksum on HEAD")
    soft(eq, "COMPOSITE", h.get("ChecksumType"), "ChecksumType on HEAD")
    a = s3.get_object_attributes(Bucket=BUCKET, Key=key,
                                 ObjectAttributes=["Checksum", "ObjectParts", "ObjectSize"])
    soft(eq, {"ChecksumSHA256": want, "ChecksumType": "COMPOSITE"}, a.get("Checksum"),
         "get_object_attributes Checksum")
    soft(eq, 2, a.get("ObjectParts", {}).get("TotalPartsCount"),
         "get_object_attributes TotalPartsCount")
    soft(eq, sum(map(len, parts)), a.get("ObjectSize"), "get_object_attributes ObjectSize")


@case
def checksum_sha256():
    _checksum_case("SHA256", "ChecksumSHA256", sha256_b64)


@case
def checksum_crc32c():
    _checksum_case("CRC32C", "ChecksumCRC32C", crc32c_b64)


@case
def checksum_and_md5_mismatch():
    body = rand(5000, 18)
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    soft(expect_error, s3.put_object, "BadDigest", 400, Bucket=BUCKET, Key="cks/bad-md5",
                 Body=body, ContentMD5=wrong)
    soft(expect_error, s3.head_object, "404", 404, Bucket=BUCKET, Key="cks/bad-md5")
    e = soft(expect_error, s3.put_object, None, 400, Bucket=BUCKET, Key="cks/bad-sha",
                     Body=body, ChecksumSHA256=sha256_b64(b"something else"))
    if e is not None:
        print(f"  checksum mismatch answered with {err_of(e)[0]}")
    soft(expect_error, s3.head_object, "404", 404, Bucket=BUCKET, Key="cks/bad-sha")
    # a right Content-MD5 is accepted
    right = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=BUCKET, Key="cks/good-md5", Body=body, ContentMD5=right)


@case
def signed_payload_without_flexible_checksums():
    # The pre-2025 SDK behaviour: x-amz-content-sha256 is the body's hash,
    # no aws-chunked encoding, no x-amz-checksum-* headers.
    c = make_client(request_checksum_calculation="when_required",
                    response_checksum_validation="when_required")
    body = rand(300_000, 19)
    c.put_object(Bucket=BUCKET, Key="plain/obj", Body=body)
    r = c.get_object(Bucket=BUCKET, Key="plain/obj")
    eq(sha(body), sha(r["Body"].read()), "sha256")
    c.upload_fileobj(__import__("io").BytesIO(rand(11 * MiB, 20)), BUCKET, "plain/mp",
                     Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    r = c.get_object(Bucket=BUCKET, Key="plain/mp")
    eq(sha(rand(11 * MiB, 20)), sha(r["Body"].read()), "sha256 of a multipart upload")


@case
def presigned_put_and_get():
    body = rand(40_000, 21)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "pre/put"},
                                    ExpiresIn=300)
    req = urllib.request.Request(url, data=body, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        eq(200, resp.status, "presigned PUT status")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "pre/put"},
                                    ExpiresIn=300)
    with urllib.request.urlopen(url, timeout=60) as resp:
        eq(sha(body), sha(resp.read()), "presigned GET content")
    # a presigned GET URL does not authorize a PUT
    req = urllib.request.Request(url, data=b"evil", method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        urllib.request.urlopen(req, timeout=60)
        raise Failure("a PUT with a presigned GET URL succeeded")
    except urllib.error.HTTPError as e:
        eq(403, e.code, "PUT with a GET URL")
    _, b = get_bytes(BUCKET, "pre/put")
    eq(sha(body), sha(b), "content after the refused PUT")


@case
def cleanup():
    for b in (BUCKET, PG):
        try:
            s3.head_bucket(Bucket=b)
        except ClientError:
            continue
        empty_and_delete(b)
    soft(expect_error, s3.head_bucket, "404", 404, Bucket=BUCKET)


# ---------------------------------------------------------------- runner

def main(argv):
    only = set(argv[1:])
    unknown = only - {c.__name__ for c in CASES}
    if unknown:
        sys.exit(f"unknown case(s): {sorted(unknown)}")
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}, endpoint {ENDPOINT}")
    passed, failed = 0, []
    if only and "bucket_basics" not in only:
        try:
            s3.head_bucket(Bucket=BUCKET)
        except ClientError:
            s3.create_bucket(Bucket=BUCKET)
    for fn in CASES:
        if only and fn.__name__ not in only:
            continue
        print(f"--- case {fn.__name__}", flush=True)
        t0 = time.time()
        _SOFT.clear()
        try:
            fn()
            if _SOFT:
                raise Failure("\n      ".join([f"{len(_SOFT)} check(s) failed:"] + _SOFT))
        except Failure as e:
            failed.append(fn.__name__)
            print(f"FAIL: {e}")
        except Exception as e:  # an unexpected error: where in this file, and what
            failed.append(fn.__name__)
            here = [f for f in traceback.extract_tb(e.__traceback__)
                    if f.filename == os.path.abspath(__file__) and f.name != "main"]
            where = " <- ".join(f"line {f.lineno} in {f.name}: {f.line}" for f in reversed(here))
            print(f"FAIL: unexpected {type(e).__name__}: {e}\n      at {where}")
            for m in _SOFT:
                print(f"      (also failed before: {m})")
        else:
            passed += 1
            print(f"--- PASS {fn.__name__} ({time.time() - t0:.1f}s)", flush=True)
            continue
        print(f"--- FAIL {fn.__name__} ({time.time() - t0:.1f}s)", flush=True)
    if failed:
        print("boto3 failed cases: " + " ".join(failed))
    print(f"boto3: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
