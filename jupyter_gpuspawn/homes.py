"""Where a user's home lives on the host, and which uid:gid their container runs as.

- Host accounts (PAM, LDAP through NSS) use their real uid/gid.
- Users with no host account (DummyAuthenticator, OAuth) get a stable uid from a configured range, recorded in a
  small JSON file so it is never handed to another name, even after the user's home is gone.
- A username can never place a home outside the home root: only plain names are accepted, and the resolved path
  must sit directly inside the resolved root (no ``..``, no ``/``, no sibling prefix, no look-alike characters).
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import tempfile
from dataclasses import dataclass

# ASCII only: look-alike characters (Cyrillic 'а', fullwidth '／', …) never reach the filesystem.
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+-]{0,63}")


class HomeError(ValueError):
    """A home or uid problem; the message is for the user (or the admin) to act on."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    source: str  # "host", "range" or "hook"


def safe_dir_name(username: str) -> str:
    if not isinstance(username, str) or not SAFE_NAME_RE.fullmatch(username) or username in (".", ".."):
        raise HomeError(
            f"The user name {username!r} cannot be used as a home directory name (allowed: ASCII letters, digits "
            "and . _ @ + -, not starting with . or -). Ask the admin to map user names "
            "(Authenticator.username_map) or set GPUDockerSpawner.home_template."
        )
    return username


def home_root(template: str) -> str:
    """The fixed directory part of a home template: ``/home/{username}`` -> ``/home``."""
    head = template.split("{", 1)[0]
    if not head.endswith("/"):
        head = os.path.dirname(head)
    root = os.path.normpath(head or "/")
    if root == "/" or not os.path.isabs(root):
        raise HomeError(f"home_template {template!r} must be an absolute path below a directory, like /home/{{username}}")
    return root


def host_home_path(template: str, username: str) -> str:
    """The host path for ``username``'s home; refuses anything that would leave the home root."""
    name = safe_dir_name(username)
    root = os.path.realpath(home_root(template))
    path = os.path.realpath(template.format(username=name))
    # commonpath, not startswith: /home/user10 must not pass as inside /home/user1.
    if os.path.commonpath([root, path]) != root or path == root:
        raise HomeError(f"The home directory for {username!r} would be outside {root}; refusing to mount it.")
    return path


def host_account(username: str, min_uid: int):
    """(uid, gid) of a host account with a regular uid, or None."""
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        return None
    if entry.pw_uid < min_uid:
        return None  # system accounts (root, daemon, …) are never used for a container
    return entry.pw_uid, entry.pw_gid


class UidMap:
    """Stable uids for users without a host account, persisted in a JSON file (locked, atomically replaced)."""

    def __init__(self, path: str, first: int, last: int):
        if not 0 < first <= last:
            raise HomeError(f"uid_range must be two positive numbers, first <= last; got {first}-{last}")
        self.path = path
        self.first = first
        self.last = last

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        users = data.get("users", {}) if isinstance(data, dict) else {}
        return {str(k): int(v) for k, v in users.items()}

    def lookup(self, username: str):
        return self._read().get(username)

    def uid_for(self, username: str) -> int:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = self._read()
            if username in users:
                return users[username]
            taken = set(users.values())
            uid = next((u for u in range(self.first, self.last + 1) if u not in taken), None)
            if uid is None:
                raise HomeError(f"No free uid left in uid_range {self.first}-{self.last}; ask the admin to widen it.")
            users[username] = uid
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".uids-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"users": users}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
            return uid


def resolve_identity(username: str, source: str, min_uid: int, uid_map: UidMap) -> Identity:
    """uid:gid for ``username`` under ``source`` = host | range | auto."""
    if source in ("host", "auto"):
        found = host_account(username, min_uid)
        if found:
            return Identity(found[0], found[1], "host")
        if source == "host":
            raise HomeError(
                f"{username!r} has no account on this server (or a system uid below {min_uid}); "
                "ask the admin to create one."
            )
    uid = uid_map.uid_for(username)
    return Identity(uid, uid, "range")


def ensure_home(path: str, identity: Identity) -> bool:
    """Create ``path`` owned by the user if it is missing; an existing home is never re-owned. Returns created."""
    if os.path.isdir(path):
        return False
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, mode=0o700)
    except FileExistsError:
        return False  # another server of the same user created it a moment ago
    os.chown(path, identity.uid, identity.gid)
    return True
