"""The one on-disk format of every encrypted vault file.

Layout: ``MAGIC | version | salt(32) | segment_size(u32) | segments``. Each file gets its own key
(HKDF of the data key with the file's random salt), so nonces never repeat across files. The
plaintext is cut into segments sealed with AES-256-GCM in the STREAM construction: the nonce holds
the segment counter and a final-segment flag, and the header plus the file's logical name are the
associated data. Flipping, truncating, reordering or swapping any byte or file fails
authentication.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.errors import IntegrityError

MAGIC = b"MEMOENC\x00"
VERSION = 1
SALT_LEN = 32
TAG_LEN = 16
HEADER = struct.Struct(">8sB32sI")
DEFAULT_SEGMENT = 1 << 20


def _file_key(data_key: bytes, salt: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"memo-file-v1").derive(data_key)
    return AESGCM(key)


def _nonce(index: int, last: bool) -> bytes:
    return struct.pack(">QB3x", index, 1 if last else 0)


def encrypted_size(plain_len: int, segment: int = DEFAULT_SEGMENT) -> int:
    segments = max(1, -(-plain_len // segment))
    return HEADER.size + plain_len + segments * TAG_LEN


def seal(data_key: bytes, plaintext: bytes, context: str, segment: int = DEFAULT_SEGMENT) -> bytes:
    """Encrypt ``plaintext`` bound to ``context`` (the file's logical name)."""
    return b"".join(seal_stream(data_key, [plaintext], context, segment))


def seal_stream(
    data_key: bytes, pieces: Iterator[bytes] | list[bytes], context: str, segment: int = DEFAULT_SEGMENT
) -> Iterator[bytes]:
    """Yield the encrypted file for a stream of plaintext pieces, holding one segment in memory."""
    salt = os.urandom(SALT_LEN)
    header = HEADER.pack(MAGIC, VERSION, salt, segment)
    aead = _file_key(data_key, salt)
    aad = header + context.encode()
    yield header
    buf = bytearray()
    index = 0
    it = iter(pieces)
    exhausted = False
    while True:
        while len(buf) <= segment and not exhausted:
            try:
                buf += next(it)
            except StopIteration:
                exhausted = True
        if exhausted and len(buf) <= segment:
            yield aead.encrypt(_nonce(index, True), bytes(buf), aad)
            return
        yield aead.encrypt(_nonce(index, False), bytes(buf[:segment]), aad)
        del buf[:segment]
        index += 1


def open_sealed(data_key: bytes, blob: bytes, context: str, name: str) -> bytes:
    """Decrypt a whole file; ``name`` is what an integrity error reports."""
    return b"".join(open_stream(data_key, blob, context, name))


def open_stream(data_key: bytes, blob: bytes | memoryview, context: str, name: str) -> Iterator[bytes]:
    view = memoryview(blob)
    if len(view) < HEADER.size + TAG_LEN:
        raise IntegrityError(f"{name}: file is truncated or not a vault file (run `memo vault verify`)")
    magic, version, salt, segment = HEADER.unpack(view[: HEADER.size])
    if magic != MAGIC:
        raise IntegrityError(f"{name}: not a vault file or header corrupted (run `memo vault verify`)")
    if version != VERSION or segment <= 0 or segment > (1 << 30):
        raise IntegrityError(f"{name}: unsupported format version or corrupted header")
    aead = _file_key(data_key, salt)
    aad = bytes(view[: HEADER.size]) + context.encode()
    body = view[HEADER.size :]
    step = segment + TAG_LEN
    count = max(1, -(-len(body) // step))
    for index in range(count):
        part = body[index * step : (index + 1) * step]
        last = index == count - 1
        try:
            yield aead.decrypt(_nonce(index, last), bytes(part), aad)
        except InvalidTag:
            raise IntegrityError(
                f"{name}: authentication failed (corrupted or tampered, segment {index}); "
                "restore it from backup"
            ) from None
