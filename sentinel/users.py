"""People and what they may do: users with roles, from a YAML file and/or an env var.

```yaml
users:
  - {name: alice, role: responder, token_sha256: 3c9a...}   # sentinel users add alice --role responder
```

Roles (DESIGN.md, People and authority): ``viewer`` reads; ``responder`` also acknowledges,
resolves and silences incidents and starts a revalidation; ``approver`` also accepts a run's
performance (a slower candidate on purpose) and starts a revalidation; ``admin`` does all of it.
The shared API token of older deployments (``api.token_env`` / ``api.token_file``) is an
``admin``.

Tokens are stored as their sha256, never in clear. Not bcrypt or argon2: those slow hashes
protect low-entropy passwords from guessing; a token made by ``new_token()`` carries 256 random
bits, so nobody can guess it from its sha256 however fast the hash, and a fast hash lets every API
request be checked in microseconds (a 100 ms bcrypt per request would make the daemon easy to
swamp). Digests are compared with ``hmac.compare_digest`` against every user, so the time taken
says nothing about which user or how much matched.

The file is re-read when it changes (``sentinel users add`` takes effect without a restart); a
file that became invalid keeps the users last read (and logs why), so a typo never locks
everyone out of a running daemon; at start an invalid file is a ConfigError.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .errors import ConfigError

log = logging.getLogger(__name__)

ROLES = ("viewer", "responder", "approver", "admin")
#: action -> roles allowed to do it
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "respond": frozenset({"responder", "admin"}),        # ack, resolve, silence
    "approve": frozenset({"approver", "admin"}),         # accept a run's performance, sign off
    "revalidate": frozenset({"responder", "approver", "admin"}),
    "admin": frozenset({"admin"}),
}
SHARED_TOKEN_USER = "admin"      # the name audited for the shared token (unless X-Sentinel-Actor says)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh token: 32 random bytes, URL-safe (43 characters)."""
    return "snt_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    token_sha256: str = ""
    shared: bool = False     # the shared API token, not a named person

    def can(self, action: str) -> bool:
        return self.role in PERMISSIONS[action]


def roles_for(action: str) -> list[str]:
    return [r for r in ROLES if r in PERMISSIONS[action]]


def parse_users(text: str, source: str) -> list[User]:
    """The users in YAML ``text`` (``{users: [...]}`` or the list alone); ConfigError naming the
    entry and key that is wrong."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {"users": []}
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {str(exc).splitlines()[0]}") from None
    entries = doc.get("users") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and set(doc) - {"users"}:
        raise ConfigError(source, sorted(set(doc) - {"users"})[0], "unknown key; the file holds `users:` only")
    if not isinstance(entries, list):
        raise ConfigError(source, "users", "must be a list of {name, role, token_sha256}")
    users: list[User] = []
    for i, entry in enumerate(entries):
        users.append(_user(entry, source, f"users[{i}]"))
    _unique(users, source)
    return users


def _user(entry: Any, source: str, key: str) -> User:
    if not isinstance(entry, dict):
        raise ConfigError(source, key, "must be a mapping with name, role, token_sha256")
    unknown = sorted(set(entry) - {"name", "role", "token_sha256"})
    if unknown:
        raise ConfigError(source, f"{key}.{unknown[0]}", "unknown key; keys are name, role, token_sha256")
    name, role, digest = (str(entry.get(k) or "") for k in ("name", "role", "token_sha256"))
    if not _NAME.match(name):
        raise ConfigError(source, f"{key}.name", f"{name!r} is not a user name (letters, digits, . _ @ -; up to 64)")
    if role not in ROLES:
        raise ConfigError(source, f"{key}.role", f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if not _SHA256.match(digest.lower()):
        raise ConfigError(source, f"{key}.token_sha256", "must be the token's sha256 as 64 hex digits")
    return User(name, role, digest.lower())


def _unique(users: list[User], source: str) -> None:
    names, digests = set(), set()
    for i, u in enumerate(users):
        if u.name in names:
            raise ConfigError(source, f"users[{i}].name", f"user {u.name!r} is listed twice")
        if u.token_sha256 in digests:
            raise ConfigError(source, f"users[{i}].token_sha256", "the same token is given to two users")
        names.add(u.name)
        digests.add(u.token_sha256)


class Users:
    """Everyone who may sign in: the users file (re-read when it changes), the env var's users, and
    the shared token as an admin. ``authenticate(token)`` is the one way in."""

    def __init__(self, *, file: str | Path | None = None, env_text: str | None = None, env_name: str = "",
                 shared_token: Callable[[], str | None] = lambda: None):
        self.file = Path(file) if file else None
        self.shared_token = shared_token
        self._env_users = parse_users(env_text, f"${env_name}") if env_text else []
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._file_users: list[User] = []
        if self.file is not None:
            self._reload(strict=True)

    @classmethod
    def from_config(cls, cfg: Any, shared_token: Callable[[], str | None]) -> "Users":
        api = cfg.api
        file = cfg.resolve_path(api.users_file) if getattr(api, "users_file", None) else None
        env_name = getattr(api, "users_env", "") or ""
        return cls(file=file, env_text=os.environ.get(env_name) if env_name else None, env_name=env_name,
                   shared_token=shared_token)

    def _reload(self, *, strict: bool = False) -> None:
        assert self.file is not None
        try:
            st = self.file.stat()
            stamp = (st.st_mtime, st.st_size)
            if stamp == self._stamp:
                return
            users = parse_users(self.file.read_text(encoding="utf-8"), str(self.file))
        except (OSError, ConfigError) as exc:
            if strict:
                raise exc if isinstance(exc, ConfigError) else ConfigError(str(self.file), "", f"cannot read: {exc}")
            log.error("users file not reloaded, keeping the users read before: %s", exc)
            return
        self._file_users, self._stamp = users, stamp

    def all(self) -> list[User]:
        if self.file is not None:
            with self._lock:
                self._reload()
        return [*self._file_users, *self._env_users]

    def by_name(self, name: str) -> User | None:
        if name == SHARED_TOKEN_USER and self.shared_token():
            return User(SHARED_TOKEN_USER, "admin", shared=True)
        return next((u for u in self.all() if u.name == name), None)

    def authenticate(self, token: str | None) -> User | None:
        """The user whose token this is, or None. Every digest is compared (constant time each)."""
        if not token:
            return None
        digest = hash_token(token).encode()
        found = None
        for user in self.all():
            if hmac.compare_digest(digest, user.token_sha256.encode()):
                found = found or user
        shared = self.shared_token()
        if shared and hmac.compare_digest(token.encode("utf-8"), shared.encode("utf-8")):
            found = found or User(SHARED_TOKEN_USER, "admin", shared=True)
        return found

    def configured(self) -> bool:
        """Whether anyone at all can sign in (else mutations are refused with 403)."""
        return bool(self.shared_token() or self.all())


def add_user(file: Path, name: str, role: str) -> str:
    """Add ``name`` with ``role`` to the users file (created if missing) and return their new
    token, which is shown once and stored only as its sha256. ConfigError if the name is taken or
    the file is invalid."""
    text = file.read_text(encoding="utf-8") if file.exists() else ""
    users = parse_users(text, str(file))
    token = new_token()
    users.append(_user({"name": name, "role": role, "token_sha256": hash_token(token)}, str(file),
                       f"users[{len(users)}]"))
    _unique(users, str(file))
    body = {"users": [{"name": u.name, "role": u.role, "token_sha256": u.token_sha256} for u in users]}
    tmp = file.with_name(file.name + ".tmp")
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("# Sentinel users: tokens are stored as sha256 (sentinel users add NAME --role R)\n"
                   + yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, file)
    return token


def describe(users: Iterable[User]) -> list[str]:
    return [f"{u.name}: {u.role}" for u in users]
