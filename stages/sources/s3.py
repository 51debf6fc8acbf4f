"""s3://bucket/prefix as a source, through boto3: AWS or any S3-compatible store (endpoint_url).

Credentials come only from boto3's own chain (environment, shared config/credentials files and profiles,
instance roles); nothing here reads, stores or prints them. Requests retry in botocore's standard mode; listing
is paginated; a download is checked against the object's ETag when that is a plain MD5 (single-part upload, no
SSE-KMS/SSE-C), and a body cut off mid-transfer is fetched again.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterator

from stages.sources import FRAME_SUFFIXES, UNSAFE_SEGMENTS, Item, ItemError, RemoteFile

ITEM_ERRORS = {"NoSuchKey", "404", "AccessDenied", "403", "InvalidObjectState"}  # one object's problem, not the run's
MD5 = re.compile(r"^[0-9a-f]{32}$")
TRANSFER_ATTEMPTS = 3


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/"); the prefix always names a folder."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Source:
    def __init__(self, uri: str, endpoint_url: str | None = None, profile: str | None = None,
                 max_attempts: int = 10, page_size: int = 1000, pool: int = 10):
        import boto3
        from botocore.config import Config

        self.uri = uri
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.page_size = page_size
        session = boto3.session.Session(profile_name=profile)
        config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, max_pool_connections=max(pool, 10))
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)  # clients are thread-safe

    def _objects(self) -> Iterator[tuple[str, int, str]]:
        """(key, size, etag) of every object under the prefix, in key order, page by page."""
        from botocore.exceptions import BotoCoreError, ClientError

        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": self.page_size})
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"], int(obj["Size"]), obj["ETag"].strip('"')
        except (ClientError, BotoCoreError) as e:
            raise RuntimeError(f"cannot list {self.uri}: {e}") from e

    def _remote(self, key: str, size: int, etag: str) -> RemoteFile:
        return RemoteFile(f"s3://{self.bucket}/{key}", key.rsplit("/", 1)[-1], size, etag)

    def _problem(self, key: str) -> str | None:
        """S3 keys are plain strings: a '.' or '..' segment would name another place once used as a path."""
        bad = [seg for seg in key[len(self.prefix):].split("/") if seg in UNSAFE_SEGMENTS]
        return f"key has a {bad[0]!r} path segment: s3://{self.bucket}/{key}" if bad else None

    def videos(self, extensions: list[str]) -> Iterator[Item]:
        exts = {e.lower() for e in extensions}
        for key, size, etag in self._objects():
            if key.endswith("/"):
                continue
            f = self._remote(key, size, etag)
            suffix = Path(f.name).suffix.lower()
            if suffix in exts:
                yield Item(Path(f.name).stem, f.uri, "video", (f,), problem=self._problem(key))

    def frame_folders(self, sidecars: list[str]) -> Iterator[Item]:
        """Objects <prefix><sequence>/<file>: one Item per sequence (deeper keys are not part of it)."""
        groups: dict[str, list[RemoteFile]] = {}
        problems: dict[str, str] = {}
        for key, size, etag in self._objects():
            parts = key[len(self.prefix):].split("/")
            if len(parts) == 2 and parts[0] and parts[1]:
                groups.setdefault(parts[0], []).append(self._remote(key, size, etag))
                if (why := self._problem(key)) and parts[1] not in UNSAFE_SEGMENTS:  # 'seq/..' is no frame
                    problems.setdefault(parts[0], why)
        for seq in sorted(groups):
            files = sorted(groups[seq], key=lambda f: f.name)
            frames = tuple(f for f in files if Path(f.name).suffix.lower() in FRAME_SUFFIXES)
            extra = tuple(f for f in files if f.name in sidecars)
            yield Item(seq, f"s3://{self.bucket}/{self.prefix}{seq}/", "frames", frames, extra,
                       problem=problems.get(seq))

    def _get(self, f: RemoteFile, dest: Path) -> tuple[int, str, str | None]:
        """One GET into dest: (bytes written, ETag, why the bytes cannot be trusted or None)."""
        from botocore.exceptions import ClientError

        key = f.uri.removeprefix(f"s3://{self.bucket}/")
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                raise ItemError(f"{f.uri} vanished after it was listed ({code})") from e
            if code in ITEM_ERRORS:
                raise ItemError(f"{f.uri} is not readable ({code})") from e
            raise
        etag, md5, n = resp["ETag"].strip('"'), hashlib.md5(), 0
        with open(dest, "wb") as out:
            for chunk in resp["Body"].iter_chunks(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                n += len(chunk)
        if n != resp["ContentLength"]:
            return n, etag, f"got {n} of {resp['ContentLength']} bytes"
        if etag_is_md5(resp, etag) and md5.hexdigest() != etag:
            return n, etag, f"checksum mismatch: md5 {md5.hexdigest()} != ETag {etag}"
        return n, etag, None

    def fetch(self, f: RemoteFile, dest: Path) -> tuple[int, str]:
        """Download f to dest, verified; a cut-off or mismatching transfer is tried again, then is the item's error."""
        from botocore.exceptions import IncompleteReadError, ResponseStreamingError
        from urllib3.exceptions import HTTPError

        why = ""
        for _ in range(TRANSFER_ATTEMPTS):
            try:
                n, etag, why = self._get(f, dest)
            except (IncompleteReadError, ResponseStreamingError, HTTPError, ConnectionError) as e:
                why = f"transfer failed: {type(e).__name__}"
                continue
            if why is None:
                return n, etag
        raise ItemError(f"{f.uri}: {why} ({TRANSFER_ATTEMPTS} attempts)")


def etag_is_md5(resp: dict, etag: str) -> bool:
    """S3 ETags are the body's MD5 only for single-part uploads without SSE-KMS or SSE-C encryption."""
    kms = str(resp.get("ServerSideEncryption", "")).startswith("aws:kms")
    return bool(MD5.match(etag)) and not kms and "SSECustomerAlgorithm" not in resp
