"""Payload encryption: an AES-256-GCM codec between the SDK and the Temporal server.

Workflow inputs, results and heartbeats are stored in the server's history; with keys configured,
the server (and whoever reads its database) sees only ciphertext. Each encrypted payload names its
key, so keys rotate by putting a new one first and keeping the old ones for existing histories.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32


class PayloadKeyError(ValueError):
    """A payload or the key configuration cannot be used; the message names the key id."""


def parse_keys(text: str) -> dict[str, bytes]:
    """``COSMOS_PAYLOAD_KEYS``: ``id=base64(32 bytes)`` pairs, comma-separated, first one first.
    Checked whole at start-up so a typo fails the process, not the first workflow task."""
    keys: dict[str, bytes] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key_id, sep, encoded = (s.strip() for s in item.partition("="))
        if not sep or not key_id or not encoded:
            raise PayloadKeyError(f"payload key {key_id or item!r}: expected key-id=base64(key)")
        if key_id in keys:
            raise PayloadKeyError(f"payload key {key_id!r} is given twice")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error as err:
            raise PayloadKeyError(f"payload key {key_id!r} is not valid base64") from err
        if len(key) != KEY_BYTES:
            raise PayloadKeyError(
                f"payload key {key_id!r} is {len(key)} bytes after base64 decoding;"
                f" AES-256 needs {KEY_BYTES}"
            )
        keys[key_id] = key
    return keys


class AesGcmCodec(PayloadCodec):
    """Encrypts with the first key; decrypts with whichever key the payload names.

    Payloads that are not encrypted pass through ``decode`` untouched, so histories written before
    encryption was turned on still read.
    """

    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise PayloadKeyError("AesGcmCodec needs at least one key")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current = next(iter(keys))

    @property
    def key_id(self) -> str:
        """The key new payloads are encrypted with."""
        return self._current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._current]
        out = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), None)
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: self._current.encode()},
                    data=nonce + sealed,
                )
            )
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decode_one(p) for p in payloads]

    def _decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"payload encrypted with unknown key id {key_id!r}; add it to COSMOS_PAYLOAD_KEYS"
                f" (known: {', '.join(self._ciphers)})"
            )
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag as err:
            raise PayloadKeyError(
                f"payload does not decrypt with key id {key_id!r}: wrong key or corrupted data"
            ) from err
        return Payload.FromString(plain)
