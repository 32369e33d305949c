"""The checksums stores announce for an object, in the form the download engine verifies.

GCS (``md5Hash``) and Azure (``Content-MD5``) report an MD5 as base64; the engine compares hex.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["md5_hex"]


def md5_hex(md5_base64: str) -> str | None:
    """The hex form of a base64 MD5 as stores report it; ``None`` when it is not a 16-byte digest."""
    try:
        digest = base64.b64decode(md5_base64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None
