"""Console sign-in: a token from the login form becomes a signed, time-limited session cookie.

The cookie (itsdangerous, HMAC-SHA256 over ``api.session_secret_*``) holds the user's name, a
prefix of their token's sha256 and the session's CSRF token. It is checked against the users on
every request, so removing a user or giving them a new token ends their sessions at once. Forms
carry the CSRF token (``csrf`` field) and a POST whose field does not match its session's is
refused: another site can make a browser send the cookie, never read the token.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..users import User, Users

COOKIE = "sentinel_session"
LOGIN_COOKIE = "sentinel_login"   # the sign-in form's CSRF token (double submit), until signed in


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf.encode())


def _key(user: User) -> str:
    return "shared" if user.shared else user.token_sha256[:16]


class Sessions:
    """Issue and read session cookies for ``users`` (``hours``: how long one lasts)."""

    def __init__(self, users: Users, secret: str | None, *, hours: float = 12, secure: bool = False):
        self.users = users
        self.max_age = int(hours * 3600)
        self.secure = secure
        # no secret configured: a random one, so sessions end when the process does
        self._signer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt="sentinel-console")

    def issue(self, user: User) -> str:
        return self._signer.dumps({"u": user.name, "k": _key(user), "c": secrets.token_urlsafe(24)})

    def read(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data: Any = self._signer.loads(cookie, max_age=self.max_age)
        except BadSignature:       # SignatureExpired is one too
            return None
        if not isinstance(data, dict):
            return None
        user = self.users.by_name(str(data.get("u", "")))
        if user is None or not hmac.compare_digest(_key(user), str(data.get("k", ""))):
            return None
        return Session(user, str(data.get("c", "")))

    def cookie_args(self) -> dict[str, Any]:
        return {"key": COOKIE, "max_age": self.max_age, "httponly": True, "samesite": "lax",
                "secure": self.secure, "path": "/"}
