from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn import homes


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "home"
    r.mkdir()
    return str(r)


def test_plain_names_map_inside_the_root(root):
    assert homes.host_home_path(root + "/{username}", "alice") == os.path.join(root, "alice")
    assert homes.host_home_path(root + "/{username}", "a.b@uni.edu") == os.path.join(root, "a.b@uni.edu")


@pytest.mark.parametrize(
    "name",
    ["..", ".", "../etc", "a/../../etc", "/etc", "a/b", "", "-rf", ".hidden", "аlice",  # Cyrillic а
     "alice\u2215x", "ａｌｉｃｅ", "alice\x00", "alice\n", "a" * 65, "al ice", "{username}"],
)
def test_names_that_could_escape_are_refused(root, name):
    with pytest.raises(homes.HomeError):
        homes.host_home_path(root + "/{username}", name)


def test_sibling_prefix_is_not_inside(tmp_path):
    # /x/user1 is the root; /x/user10 must not count as inside it (a startswith check would let it through)
    (tmp_path / "user1").mkdir()
    (tmp_path / "user10").mkdir()
    os.symlink(str(tmp_path / "user10"), str(tmp_path / "user1" / "evil"))
    with pytest.raises(homes.HomeError, match="outside"):
        homes.host_home_path(str(tmp_path / "user1") + "/{username}", "evil")


def test_symlinked_home_pointing_outside_is_refused(root, tmp_path):
    os.symlink("/etc", os.path.join(root, "mallory"))
    with pytest.raises(homes.HomeError, match="outside"):
        homes.host_home_path(root + "/{username}", "mallory")


@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=70))
def test_any_accepted_name_stays_directly_inside_the_root(tmp_path_factory, name):
    root = str(tmp_path_factory.getbasetemp() / "homes-prop")
    os.makedirs(root, exist_ok=True)
    try:
        path = homes.host_home_path(root + "/{username}", name)
    except homes.HomeError:
        return
    assert os.path.dirname(path) == os.path.realpath(root)
    assert name.isascii() and "/" not in name and name not in (".", "..")


def test_home_root_of_templates():
    assert homes.home_root("/home/{username}") == "/home"
    assert homes.home_root("/srv/homes/{username}/work") == "/srv/homes"
    with pytest.raises(homes.HomeError):
        homes.home_root("/{username}")


def test_uid_map_is_stable_and_never_reuses(tmp_path):
    path = str(tmp_path / "uids.json")
    m = homes.UidMap(path, 5000, 5002)
    assert m.uid_for("a") == 5000
    assert m.uid_for("b") == 5001
    assert m.uid_for("a") == 5000
    assert homes.UidMap(path, 5000, 5002).uid_for("b") == 5001  # persisted
    assert json.load(open(path))["users"] == {"a": 5000, "b": 5001}
    assert m.uid_for("c") == 5002
    with pytest.raises(homes.HomeError, match="No free uid"):
        m.uid_for("d")


def test_host_accounts_below_min_uid_are_never_used(tmp_path):
    m = homes.UidMap(str(tmp_path / "u.json"), 300000, 300010)
    # root exists on every host but is a system account: auto falls back to the range, host refuses
    assert homes.resolve_identity("root", "auto", 1000, m) == homes.Identity(300000, 300000, "range")
    with pytest.raises(homes.HomeError, match="no account"):
        homes.resolve_identity("root", "host", 1000, m)


def test_ensure_home_creates_owned_dir_and_never_reowns(tmp_path):
    path = str(tmp_path / "h" / "alice")
    ident = homes.Identity(os.getuid() + 12345, os.getgid() + 12345, "range")
    assert homes.ensure_home(path, ident) is True
    st_ = os.stat(path)
    assert (st_.st_uid, st_.st_gid, st_.st_mode & 0o777) == (ident.uid, ident.gid, 0o700)
    assert homes.ensure_home(path, homes.Identity(1, 1, "range")) is False
    assert os.stat(path).st_uid == ident.uid


def test_ensure_home_tolerates_a_concurrent_creation(tmp_path, monkeypatch):
    # two named servers of a new user start at once: both see no home, one mkdir wins
    path = str(tmp_path / "h" / "bob")
    ident = homes.Identity(os.getuid(), os.getgid(), "range")
    real_isdir = os.path.isdir
    monkeypatch.setattr(homes.os.path, "isdir", lambda p: False if p == path else real_isdir(p))
    assert homes.ensure_home(path, ident) is True
    assert homes.ensure_home(path, ident) is False  # the loser of the race does not fail
