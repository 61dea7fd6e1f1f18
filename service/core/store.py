"""The artifact store: one interface, chosen by URL scheme (`file://` or `s3://bucket/prefix`).

Keys are content addressed (`sha256/ab/abcd....safetensors`, the file's own suffix: `.png` for job
previews); the hash is recorded in the database and every read checks the bytes against it before
handing them on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlparse

from service.core.settings import Settings

CHUNK = 1 << 20


class ArtifactIntegrityError(RuntimeError):
    """The stored bytes do not hash to the recorded sha256."""


class ArtifactMissing(RuntimeError):
    """The store has no object at the recorded URI (deleted, or another bucket)."""


@dataclass(frozen=True)
class StoredArtifact:
    uri: str
    sha256: str
    bytes: int


class ArtifactStore(Protocol):
    def put(self, path: Path) -> StoredArtifact: ...

    def fetch(self, uri: str, sha256: str, into: IO[bytes]) -> None:
        """Write the object's bytes to `into`; ArtifactIntegrityError if they do not hash to `sha256`."""
        ...

    def presigned_url(self, uri: str) -> str | None: ...

    def check(self) -> None:
        """Raise if the store cannot be reached."""
        ...


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_url_path(url: str) -> Path:
    """`file:///abs/dir` or the relative `file://./dir` (resolved against the working directory)."""
    parsed = urlparse(url)
    path = unquote(parsed.path)
    if parsed.netloc not in ("", "localhost"):
        return (Path(parsed.netloc + path)).resolve()
    return Path(path)


def content_key(sha256: str, suffix: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256}{suffix}"


def _copy_checked(src: IO[bytes], into: IO[bytes], sha256: str, uri: str) -> None:
    digest = hashlib.sha256()
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        into.write(chunk)
    if digest.hexdigest() != sha256:
        raise ArtifactIntegrityError(f"{uri}: content hashes to {digest.hexdigest()}, recorded {sha256}")


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, path: Path) -> StoredArtifact:
        sha256 = file_sha256(path)
        target = self.root / content_key(sha256, path.suffix)
        # Same content, same key: nothing to write twice, unless what is there was damaged.
        if not (target.exists() and file_sha256(target) == sha256):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Copy then rename, so a reader never sees a half-written object.
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
            os.replace(tmp, target)
        return StoredArtifact(target.as_uri(), sha256, path.stat().st_size)

    def fetch(self, uri: str, sha256: str, into: IO[bytes]) -> None:
        try:
            src = file_url_path(uri).open("rb")
        except FileNotFoundError as exc:
            raise ArtifactMissing(uri) from exc
        with src:
            _copy_checked(src, into, sha256, uri)

    def presigned_url(self, uri: str) -> str | None:
        return None

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise PermissionError(f"artifact directory {self.root} is not writable")


class S3Store:
    def __init__(self, bucket: str, prefix: str, client: Any, presign_expiry_s: int) -> None:
        self.bucket, self.prefix, self.client = bucket, prefix.strip("/"), client
        self.presign_expiry_s = presign_expiry_s

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _split(self, uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        return parsed.netloc, parsed.path.lstrip("/")

    def put(self, path: Path) -> StoredArtifact:
        sha256 = file_sha256(path)
        key = self._key(content_key(sha256, path.suffix))
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}})
        return StoredArtifact(f"s3://{self.bucket}/{key}", sha256, path.stat().st_size)

    def fetch(self, uri: str, sha256: str, into: IO[bytes]) -> None:
        bucket, key = self._split(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey as exc:
            raise ArtifactMissing(uri) from exc
        try:
            _copy_checked(body, into, sha256, uri)
        finally:
            body.close()

    def presigned_url(self, uri: str) -> str | None:
        bucket, key = self._split(uri)
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.presign_expiry_s)
        return url

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    secret = settings.s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        # boto3 >= 1.36 adds CRC checksums to every upload and validates them on download by
        # default; many S3-compatible servers (older MinIO, Ceph, R2) reject or mangle them.
        # Our own sha256 check covers integrity.
        config=Config(request_checksum_calculation="when_required",
                      response_checksum_validation="when_required", signature_version="s3v4",
                      # Self-hosted endpoints rarely have wildcard DNS for bucket subdomains.
                      s3={"addressing_style": "path"} if settings.s3_endpoint_url else None),
    )


def store_for(settings: Settings) -> ArtifactStore:
    """The store named by `settings.artifact_store_url`."""
    url = settings.artifact_store_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileStore(file_url_path(url))
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path, s3_client(settings), settings.s3_presign_expiry_s)
    raise ValueError(f"unsupported artifact store URL {url!r}")
