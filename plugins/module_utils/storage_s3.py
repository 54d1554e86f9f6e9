"""S3 storage: multipart uploads and ranged downloads in parallel, memory bounded.

Memory stays at about ``part_size * (concurrency + 1)`` in each direction for
objects up to ``part_size * 1000`` (8 GB by default), and grows slowly beyond.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .errors import ObjectMissing, StorageError
from .storage import StoredObject, check_key

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:  # reported when an S3 repository is configured
    boto3 = None

MIB = 1 << 20
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
PARTS_PER_DOUBLING = 1000


def _describe(error: Exception) -> str:
    if boto3 is not None and isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', '')}".rstrip(": ")
    return str(error)


class S3Storage:
    """A bucket and a key prefix on any S3 API endpoint."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        part_size: int = 8 * MIB,
        concurrency: int = 4,
    ):
        if boto3 is None:
            raise StorageError("S3 repositories need boto3: pip install boto3")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.part_size = max(part_size, 5 * MIB)  # S3's smallest multipart part
        self.concurrency = concurrency
        session = boto3.session.Session(profile_name=profile, region_name=region)
        config = botocore.config.Config(
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=120,
            max_pool_connections=concurrency * 2 + 2,
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _fail(self, action: str, key: str, error: Exception) -> StorageError:
        if boto3 is not None and isinstance(error, botocore.exceptions.ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            if code in NOT_FOUND_CODES:
                return ObjectMissing(f"{key} is missing from {self.url}")
        return StorageError(f"cannot {action} {key} in {self.url}: {_describe(error)}")

    def probe(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as error:  # noqa: BLE001 - every cause ends the same way
            raise StorageError(
                f"repository {self.url} is not reachable: {_describe(error)}; "
                "check the endpoint, the bucket name and the credentials"
            ) from None

    def writer(self, key: str) -> S3Writer:
        return S3Writer(self, self._key(key))

    def reader(self, key: str) -> S3Reader:
        full_key = self._key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full_key)
        except Exception as error:  # noqa: BLE001
            raise self._fail("read", key, error) from None
        return S3Reader(self, full_key, head["ContentLength"], head.get("ETag"))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        full_prefix = self._key(prefix.strip("/")) + "/" if prefix else (
            f"{self.prefix}/" if self.prefix else ""
        )
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full_prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(
                        self._relative(item["Key"]),
                        item["Size"],
                        item["LastModified"].timestamp(),
                    )
        except StorageError:
            raise
        except Exception as error:  # noqa: BLE001
            raise self._fail("list", prefix or "/", error) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as error:  # noqa: BLE001
            raise self._fail("delete", key, error) from None

    def remove_incomplete(self, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        removed = []
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() <= cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed.append(self._relative(upload["Key"]))
        except Exception as error:  # noqa: BLE001
            raise self._fail("clean interrupted uploads under", prefix or "/", error) from None
        return removed


class S3Writer:
    """Buffers one part at a time; full parts upload in parallel, bounded in flight."""

    def __init__(self, storage: S3Storage, full_key: str):
        self._storage = storage
        self._client = storage.client
        self._key = full_key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future] = []
        self._slots = threading.BoundedSemaphore(storage.concurrency)
        self._pool: ThreadPoolExecutor | None = None

    def _part_size(self) -> int:
        # S3 allows 10,000 parts: doubling every 1,000 keeps memory small for
        # ordinary objects and still reaches terabytes for a stream of unknown size.
        return self._storage.part_size << (len(self._parts) // PARTS_PER_DOUBLING)

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= (part_size := self._part_size()):
            part = bytes(self._buffer[:part_size])
            del self._buffer[:part_size]
            self._send_part(part)

    def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            response = self._call(
                self._client.create_multipart_upload,
                Bucket=self._storage.bucket, Key=self._key, ChecksumAlgorithm="CRC32",
            )
            self._upload_id = response["UploadId"]
            self._pool = ThreadPoolExecutor(self._storage.concurrency, "s3-upload")
        number = len(self._parts) + 1
        self._slots.acquire()  # at most `concurrency` parts in memory in flight
        future = self._pool.submit(self._upload_part, number, data)
        future.add_done_callback(lambda _future: self._slots.release())
        self._parts.append(future)
        for done in self._parts:
            if done.done() and done.exception():
                raise done.exception()

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        response = self._call(
            self._client.upload_part,
            Bucket=self._storage.bucket, Key=self._key, UploadId=self._upload_id,
            PartNumber=number, Body=data, ChecksumAlgorithm="CRC32",
        )
        return {"PartNumber": number, "ETag": response["ETag"],
                "ChecksumCRC32": response.get("ChecksumCRC32")}

    def _call(self, operation, **arguments):
        try:
            return operation(**arguments)
        except Exception as error:  # noqa: BLE001
            raise self._storage._fail("write", self._key, error) from None

    def commit(self) -> None:
        if self._upload_id is None:
            self._call(
                self._client.put_object,
                Bucket=self._storage.bucket, Key=self._key, Body=bytes(self._buffer),
                ChecksumAlgorithm="CRC32",
            )
            return
        if self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer.clear()
        parts = [future.result() for future in self._parts]
        self._pool.shutdown()
        for part in parts:
            if part["ChecksumCRC32"] is None:
                del part["ChecksumCRC32"]
        self._call(
            self._client.complete_multipart_upload,
            Bucket=self._storage.bucket, Key=self._key, UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )

    def abort(self) -> None:
        if self._pool:
            self._pool.shutdown(cancel_futures=True)
        if self._upload_id:
            with contextlib.suppress(Exception):  # else lifecycle rules expire it
                self._client.abort_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._key, UploadId=self._upload_id
                )


class S3Reader(io.RawIOBase):
    """Reads an object front to back with ranged GETs prefetched in parallel."""

    def __init__(self, storage: S3Storage, full_key: str, size: int, etag: str | None):
        super().__init__()
        self._storage = storage
        self._key = full_key
        self._size = size
        self._etag = etag
        self._next_offset = 0
        self._pending: deque[Future] = deque()
        self._current = memoryview(b"")
        self._pool = ThreadPoolExecutor(storage.concurrency, "s3-download")
        self._fill()

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while len(self._pending) < self._storage.concurrency and self._next_offset < self._size:
            start = self._next_offset
            end = min(start + self._storage.part_size, self._size) - 1
            self._pending.append(self._pool.submit(self._get_range, start, end))
            self._next_offset = end + 1

    def _get_range(self, start: int, end: int) -> bytes:
        arguments = {"Bucket": self._storage.bucket, "Key": self._key,
                     "Range": f"bytes={start}-{end}"}
        if self._etag:
            arguments["IfMatch"] = self._etag  # the object must not change under us
        try:
            return self._storage.client.get_object(**arguments)["Body"].read()
        except Exception as error:  # noqa: BLE001
            raise self._storage._fail("read", self._key, error) from None

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(16 * MIB), b""))
        while not self._current:
            if not self._pending:
                return b""
            self._current = memoryview(self._pending.popleft().result())
            self._fill()
        chunk = bytes(self._current[:size])
        self._current = self._current[size:]
        return chunk

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._pending.clear()
        super().close()
