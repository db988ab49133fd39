"""Secrets at rest (provider credentials, webhook signing secrets): encrypted with a key
derived from the app's secret key, so that a copy of the database alone reveals none.

Changing SECRET_KEY makes stored secrets unreadable: they must then be entered again.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted (the secret key changed since it was saved)."""


class Vault:
    def __init__(self, secret_key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"tenure", info=b"stored secrets"
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, value: Any) -> str:
        """Encrypt any JSON value."""
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, token: str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError) as exc:
            raise SecretUnreadable(
                "a stored secret cannot be read: SECRET_KEY changed since it was saved; "
                "enter it again"
            ) from exc
