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
    assert homes.host_home_path(root + "/{username}", "a.b@uni.edu") == os.path.join(
        root, "a.b@uni.edu"
    )


@pytest.mark.parametrize(
    "name",
    [
        "..",
        ".",
        "../etc",
        "a/../../etc",
        "/etc",
        "a/b",
        "",
        "-rf",
        ".hidden",
        "аlice",  # Cyrillic а
        "alice\u2215x",
        "ａｌｉｃｅ",
        "alice\x00",
        "alice\n",
        "a" * 65,
        "al ice",
        "{username}",
    ],
)
def test_names_that_could_escape_are_refused(root, name):
    with pytest.raises(homes.HomeError):
        homes.host_home_path(root + "/{username}", name)


def test_sibling_prefix_is_not_inside(tmp_path):
    # /x/user1 is the root; /x/user10 must not count as inside it (a startswith check would let it
    # through)
    (tmp_path / "user1").mkdir()
    (tmp_path / "user10").mkdir()
    os.symlink(str(tmp_path / "user10"), str(tmp_path / "user1" / "evil"))
    path = homes.host_home_path(str(tmp_path / "user1") + "/{username}", "evil")
    with pytest.raises(homes.HomeError, match="symlink"):
        homes.ensure_home(
            path, homes.Identity(os.getuid(), os.getgid(), "host"), str(tmp_path / "user1")
        )


def test_symlinked_home_pointing_outside_is_refused(root):
    os.symlink("/etc", os.path.join(root, "mallory"))
    path = homes.host_home_path(root + "/{username}", "mallory")
    assert path == os.path.join(root, "mallory")  # not resolved to /etc
    with pytest.raises(homes.HomeError, match="symlink"):
        homes.ensure_home(path, homes.Identity(0 + 4242, 4242, "range"), root)


def test_nested_template_with_a_symlink_into_another_home_is_refused(root):
    # /home/{username}/work: mallory owns /home/mallory and points work at bob's home
    template = root + "/{username}/work"
    bob, mallory = homes.Identity(50001, 50001, "range"), homes.Identity(50002, 50002, "range")
    assert homes.ensure_home(homes.host_home_path(template, "bob"), bob, root) is True
    os.makedirs(os.path.join(root, "mallory"))
    os.symlink(os.path.join(root, "bob", "work"), os.path.join(root, "mallory", "work"))
    with pytest.raises(homes.HomeError, match="symlink"):
        homes.ensure_home(homes.host_home_path(template, "mallory"), mallory, root)
    assert os.stat(os.path.join(root, "bob", "work")).st_uid == bob.uid  # bob's home untouched
    # a link higher up is refused too
    os.symlink(os.path.join(root, "bob"), os.path.join(root, "eve"))
    with pytest.raises(homes.HomeError, match="symlink"):
        homes.ensure_home(
            homes.host_home_path(template, "eve"), homes.Identity(50003, 50003, "range"), root
        )


def test_home_owned_by_another_uid_is_refused(root):
    os.makedirs(os.path.join(root, "alice"))
    os.chown(os.path.join(root, "alice"), 1001, 1001)  # alice's host account
    imposter = homes.Identity(200000, 200000, "range")  # an OAuth login named alice
    with pytest.raises(homes.HomeError, match="belongs to uid 1001"):
        homes.ensure_home(os.path.join(root, "alice"), imposter, root)
    with pytest.raises(homes.HomeError, match="belongs to uid 1001"):
        homes.ensure_home(os.path.join(root, "alice"), imposter, root, create=False)
    assert os.stat(os.path.join(root, "alice")).st_uid == 1001


def test_home_is_chowned_through_its_descriptor_not_its_path(root, monkeypatch):
    # a link swapped in between mkdir and chown must not redirect the chown: ensure_home never
    # chowns by path
    monkeypatch.setattr(homes.os, "chown", lambda *a, **k: pytest.fail("chown by path"))
    monkeypatch.setattr(
        homes.os, "lchown", lambda *a, **k: pytest.fail("chown by path"), raising=False
    )
    assert (
        homes.ensure_home(os.path.join(root, "carol"), homes.Identity(50004, 50004, "range"), root)
        is True
    )
    assert os.stat(os.path.join(root, "carol")).st_uid == 50004


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
    assert homes.resolve_identity("root", "auto", 1000, m, True) == homes.Identity(
        300000, 300000, "range"
    )
    with pytest.raises(homes.HomeError, match="no account"):
        homes.resolve_identity("root", "host", 1000, m)


def test_a_login_name_alone_does_not_unlock_the_host_account(tmp_path):
    # "daemon" exists on every Debian host (uid 1); with min_uid 0 it counts as a regular host
    # account
    m = homes.UidMap(str(tmp_path / "u.json"), 300000, 300010)
    daemon = homes.resolve_identity("daemon", "auto", 0, m, trust_host_accounts=True)
    assert daemon.source == "host" and daemon.uid == 1
    untrusted = homes.resolve_identity("daemon", "auto", 0, m)  # dummy/OAuth login named daemon
    assert untrusted == homes.Identity(300000, 300000, "range")
    assert homes.resolve_identity("daemon", "host", 0, m).uid == 1  # an admin's explicit choice


def test_ensure_home_creates_owned_dir_and_never_reowns(tmp_path):
    path = str(tmp_path / "h" / "alice")
    ident = homes.Identity(os.getuid() + 12345, os.getgid() + 12345, "range")
    assert homes.ensure_home(path, ident, str(tmp_path)) is True
    st_ = os.stat(path)
    assert (st_.st_uid, st_.st_gid, st_.st_mode & 0o777) == (ident.uid, ident.gid, 0o700)
    with pytest.raises(homes.HomeError, match="belongs to uid"):
        homes.ensure_home(path, homes.Identity(1, 1, "range"), str(tmp_path))
    assert os.stat(path).st_uid == ident.uid
    assert homes.ensure_home(path, ident, str(tmp_path)) is False


def test_ensure_home_tolerates_a_concurrent_creation(tmp_path, monkeypatch):
    # two named servers of a new user start at once: both see no home, one mkdir wins
    path = str(tmp_path / "bob")
    ident = homes.Identity(os.getuid(), os.getgid(), "range")
    real_mkdir = os.mkdir

    def racing_mkdir(name, mode=0o777, *, dir_fd=None):
        real_mkdir(name, mode, dir_fd=dir_fd)  # the other server wins the race
        raise FileExistsError(name)

    monkeypatch.setattr(homes.os, "mkdir", racing_mkdir)
    # the loser of the race does not fail
    assert homes.ensure_home(path, ident, str(tmp_path)) is False
    assert os.path.isdir(path)


def test_uid_map_is_fsynced_before_a_uid_is_handed_out(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(homes.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    homes.UidMap(str(tmp_path / "uids.json"), 5000, 5001).uid_for("a")
    assert len(synced) == 2  # the file, then its directory (the rename)


def test_default_uid_map_file_is_absolute_and_next_to_the_hub_database(tmp_path, monkeypatch):
    from traitlets.config import Config

    from jupyter_gpuspawn.settings import default_uid_map_file

    monkeypatch.chdir(tmp_path)
    assert default_uid_map_file(Config()) == str(tmp_path / "jupyter_gpuspawn_uids.json")
    config = Config()
    config.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
    assert default_uid_map_file(config) == "/srv/jupyterhub/jupyter_gpuspawn_uids.json"
    config.JupyterHub.db_url = "sqlite:///state/hub.sqlite"
    assert default_uid_map_file(config) == str(tmp_path / "state" / "jupyter_gpuspawn_uids.json")
    config.JupyterHub.db_url = "postgresql://hub@db/jupyterhub"
    assert default_uid_map_file(config) == str(tmp_path / "jupyter_gpuspawn_uids.json")


def test_a_missing_home_is_refused_when_homes_are_not_created(root):
    with pytest.raises(homes.HomeError, match="does not exist and create_home is off"):
        homes.ensure_home(
            os.path.join(root, "dora"), homes.Identity(50005, 50005, "range"), root, create=False
        )
    assert not os.path.exists(os.path.join(root, "dora"))


@pytest.mark.parametrize("text", ["{not json", '{"users": {"a": "five"}}', '{"users": ["a"]}'])
def test_a_broken_uid_map_is_never_read_as_empty(tmp_path, text):
    # read as empty, every user would get a uid anew: another student's home
    path = tmp_path / "uids.json"
    path.write_text(text)
    m = homes.UidMap(str(path), 5000, 5002)
    for call in (m.uid_for, m.lookup):
        with pytest.raises(homes.HomeError, match="cannot read its uid map .* until an admin"):
            call("a")
    assert path.read_text() == text


def test_a_uid_map_that_cannot_be_written_says_so(tmp_path):
    (tmp_path / "file").write_text("")
    m = homes.UidMap(str(tmp_path / "file" / "uids.json"), 5000, 5002)
    with pytest.raises(homes.HomeError, match="cannot write its uid map .*until an admin"):
        m.uid_for("a")
