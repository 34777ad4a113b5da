"""Where a user's home lives on the host, and which uid:gid their container runs as.

- Host accounts (PAM, LDAP through NSS) use their real uid/gid.
- Users with no host account (DummyAuthenticator, OAuth) get a stable uid from a configured range,
  recorded in a small JSON file so it is never handed to another name, even after the user's home is
  gone.
- A username can never place a home outside the home root: only plain names are accepted, and the
  path must sit inside the root (no ``..``, no ``/``, no sibling prefix, no look-alike characters).
- Below the root no symlink is followed: homes are opened and created component by component with
  ``O_NOFOLLOW`` relative to their parent's descriptor and chowned through that descriptor, so a
  user who turns a directory of theirs into a link to someone else's home gets a refusal, not that
  home.
- A home is mounted only if it belongs to the user's uid: a hub login that happens to share a name
  with someone else's home never gets it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import threading
from dataclasses import dataclass

from .datafiles import write_json_atomic

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
    if (
        not isinstance(username, str)
        or not SAFE_NAME_RE.fullmatch(username)
        or username in (".", "..")
    ):
        raise HomeError(
            f"The user name {username!r} cannot be used as a home directory name (allowed: ASCII "
            f"letters, digits "
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
        raise HomeError(
            f"home_template {template!r} must be an absolute path below a directory, like "
            f"/home/{{username}}"
        )
    return root


def host_home_path(template: str, username: str) -> str:
    """The host path for ``username``'s home; refuses anything that would leave the home root.

    Only the root (the admin's fixed directory) is resolved; the rest is checked lexically here and
    walked without following links by :func:`ensure_home`.
    """
    name = safe_dir_name(username)
    root = home_root(template)
    path = os.path.normpath(template.format(username=name))
    # commonpath, not startswith: /home/user10 must not pass as inside /home/user1.
    if os.path.commonpath([root, path]) != root or path == root:
        raise HomeError(
            f"The home directory for {username!r} would be outside {root}; refusing to mount it."
        )
    return os.path.join(os.path.realpath(root), os.path.relpath(path, root))


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
    """Stable uids for users without a host account, persisted in a JSON file (locked, atomically
    replaced)."""

    def __init__(self, path: str, first: int, last: int):
        if not 0 < first <= last:
            raise HomeError(
                f"uid_range must be two positive numbers, first <= last; got {first}-{last}"
            )
        self.path = path
        self.first = first
        self.last = last

    def _read(self) -> dict:
        """The map; HomeError when it cannot be read: never empty then, or every user would be
        given a uid anew, and with it another student's home."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            users = data.get("users", {}) if isinstance(data, dict) else {}
            return {str(k): int(v) for k, v in users.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise HomeError(self._broken("read", e)) from None

    def _broken(self, what: str, error: Exception) -> str:
        detail = error.strerror if isinstance(error, OSError) and error.strerror else error
        return (
            f"The hub cannot {what} its uid map {self.path} ({detail}), which says who owns which "
            "home; no server starts under a uid from the range until an admin fixes it."
        )

    def lookup(self, username: str):
        return self._read().get(username)

    def uid_for(self, username: str) -> int:
        try:
            return self._uid_for(username)
        except OSError as e:  # a full or read-only disk
            raise HomeError(self._broken("write", e)) from None

    def _uid_for(self, username: str) -> int:
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
                raise HomeError(
                    f"No free uid left in uid_range {self.first}-{self.last}; ask the admin to "
                    f"widen it."
                )
            users[username] = uid
            # durable: after a power cut the map must not have lost a uid that already owns a home
            write_json_atomic(self.path, {"users": users}, mode=0o600, durable=True)
            return uid


def resolve_identity(
    username: str, source: str, min_uid: int, uid_map: UidMap, trust_host_accounts: bool = False
) -> Identity:
    """uid:gid for ``username`` under ``source`` = host | range | auto.

    ``auto`` uses a host account only when ``trust_host_accounts`` (the authenticator checked that
    account's password, as PAM does); otherwise the name is just a hub login and gets a uid from the
    range.
    """
    if source == "host" or (source == "auto" and trust_host_accounts):
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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_below(parent_fd: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file or a link
        raise HomeError(
            f"{shown} is a symlink or not a directory; refusing to use it as a home. "
            "An admin must replace it with a real directory."
        ) from e


# Two named servers of a new user start at once: without this, one could open the home the other
# just made before it is chowned, see root as its owner and refuse it. One hub process, executor
# threads.
_creating = threading.Lock()


def ensure_home(path: str, identity: Identity, root: str, create: bool = True) -> bool:
    """Check (and create if missing) the home ``path`` below ``root``; returns whether it was
    created.

    Nothing below ``root`` may be a symlink. A missing home is created mode 0700 and chowned through
    the descriptor it was opened with (no window in which a link could be swapped in); missing
    directories above it are created root-owned, 0755. An existing home must belong to the user's
    uid: it is never re-owned, never mounted. With ``create`` off a missing home is refused (Docker
    would create it root-owned, following links).
    """
    with _creating:
        return _ensure_home(path, identity, root, create)


def _ensure_home(path: str, identity: Identity, root: str, create: bool) -> bool:
    root = os.path.realpath(root)
    parts = os.path.relpath(path, root).split(os.sep)
    if os.path.commonpath([root, path]) != root or not parts or ".." in parts or parts == ["."]:
        raise HomeError(f"The home directory {path} is not inside {root}; refusing to use it.")
    fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)
    created = False
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            shown = os.path.join(root, *parts[: i + 1])
            try:
                child = _open_below(fd, name, shown)
            except FileNotFoundError:
                if not create:
                    raise HomeError(
                        f"The home directory {path} does not exist and create_home is off; an "
                        f"admin "
                        "must create it, owned by the user."
                    ) from None
                try:
                    os.mkdir(name, 0o700 if last else 0o755, dir_fd=fd)
                    created = last
                except FileExistsError:
                    pass  # another server of the same user created it a moment ago
                child = _open_below(fd, name, shown)
                if created:
                    os.fchown(child, identity.uid, identity.gid)
                    os.fchmod(child, 0o700)
            os.close(fd)
            fd = child
        owner = os.fstat(fd).st_uid
        if owner != identity.uid:
            raise HomeError(
                f"The home directory {path} belongs to uid {owner}, not to this user's uid "
                f"{identity.uid}; refusing to mount it. An admin must check who it belongs to."
            )
        return created
    finally:
        os.close(fd)
