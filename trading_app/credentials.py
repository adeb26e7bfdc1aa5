"""Exchange API secrets at rest: Fernet-encrypted, never stored or shown in plain text.

The key is settings.FIELD_ENCRYPTION_KEY (a Fernet key) or, when that is empty, one derived from
SECRET_KEY with HKDF, so a fresh install works and a deployment can rotate the two independently.
"""

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


class CredentialsError(Exception):
    """A stored secret cannot be read back (wrong key) or an env variable it names is unset."""


def _fernet() -> Fernet:
    if settings.FIELD_ENCRYPTION_KEY:
        return Fernet(settings.FIELD_ENCRYPTION_KEY)
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"botai exchange credentials"
    ).derive(settings.SECRET_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode() if plain else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialsError(
            "stored exchange credentials cannot be decrypted: FIELD_ENCRYPTION_KEY or "
            "DJANGO_SECRET_KEY changed since they were saved; enter them again"
        ) from None
