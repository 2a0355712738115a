"""User and group resolution through the image's /etc/passwd and /etc/group, read safely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bundlekit import GROUP, PASSWD

from stackd.engine.bundle_user import UserDb, UserError, parse_group, parse_passwd, resolve_user
from stackd.engine.safe_open import mkdirs_in_root, read_in_root


@pytest.fixture
def db(tmp_path: Path) -> UserDb:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD + "# comment\nbroken line\nbad:x:notanumber:0::/:\n")
    (tmp_path / "etc/group").write_text(GROUP)
    return UserDb.from_rootfs(tmp_path, "busybox")


def ids(u):
    return (u.uid, u.gid, list(u.additional_gids))


def test_parsers_skip_malformed_lines():
    assert [e.name for e in parse_passwd("a:x:1:2::/h:/bin/sh\nb:x:z:1::\nc\n")] == ["a"]
    g = parse_group("g:x:5:a,b\nh:x:6:\nbad:x:y:\n")
    assert [(x.name, x.gid, x.members) for x in g] == [("g", 5, ("a", "b")), ("h", 6, ())]


@pytest.mark.parametrize(("spec", "expected"), [
    ("", (0, 0, [0, 10, 50])),  # root, plus the groups that list root
    ("root", (0, 0, [0, 10, 50])),
    ("app", (1000, 1000, [1000, 29, 50])),
    ("1000", (1000, 1000, [1000, 29, 50])),  # a known uid resolves like its name
    ("app:staff", (1000, 50, [50])),  # an explicit group: no membership groups
    ("app:29", (1000, 29, [29])),
    ("1234", (1234, 0, [0])),  # unknown numeric uid: passes through with gid 0, as Docker
    ("1234:4321", (1234, 4321, [4321])),
    ("nobody", (65534, 65534, [65534])),
])  # fmt: skip
def test_resolve_user(db, spec, expected):
    assert ids(resolve_user(db, spec, image="busybox")) == expected


def test_home_and_name(db):
    u = resolve_user(db, "app")
    assert (u.home, u.name) == ("/home/app", "app")
    assert resolve_user(db, "4242").home == "/"


def test_group_add_names_and_numbers(db):
    u = resolve_user(db, "nobody", ["audio", "777", "nogroup"])
    assert ids(u) == (65534, 65534, [65534, 29, 777])


def test_unknown_user_names_the_user_and_the_image(db):
    with pytest.raises(UserError, match=r"unable to find user 'ghost' in image busybox: no matching entries in /etc/passwd"):
        resolve_user(db, "ghost", image="busybox")


def test_unknown_group_and_group_add(db):
    with pytest.raises(UserError, match="unable to find group 'ghosts' in image busybox"):
        resolve_user(db, "app:ghosts", image="busybox")
    with pytest.raises(UserError, match="group_add group 'nope'"):
        resolve_user(db, "app", ["nope"], image="busybox")


def test_image_without_passwd(tmp_path):
    db = UserDb.from_rootfs(tmp_path, "scratch")
    assert db.passwd is None
    assert ids(resolve_user(db, "")) == (0, 0, [0])
    assert ids(resolve_user(db, "5:6")) == (5, 6, [6])
    with pytest.raises(UserError, match="unable to find user 'app' in image scratch: no /etc/passwd file"):
        resolve_user(db, "app", image="scratch")


def test_passwd_symlink_cannot_escape_the_rootfs(tmp_path):
    """A hostile image's /etc/passwd -> /../../../etc/shadow resolves inside the rootfs."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "host-secret"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    (root / "etc/passwd").symlink_to("../../host-secret")
    (root / "etc/group").symlink_to(str(outside))  # absolute: resolves to <root>/<tmp>/host-secret
    assert read_in_root(root, "/etc/passwd") is None
    assert read_in_root(root, "/etc/group") is None
    (root / "host-secret").write_text("inside:x:7:7::/:\n")
    assert read_in_root(root, "/etc/passwd") == b"inside:x:7:7::/:\n"
    db = UserDb.from_rootfs(root, "evil")
    with pytest.raises(UserError, match="'evil'"):
        resolve_user(db, "evil", image="evil")


def test_passwd_not_a_regular_file(tmp_path):
    (tmp_path / "etc/passwd").mkdir(parents=True)
    with pytest.raises(UserError, match="cannot read /etc/passwd"):
        UserDb.from_rootfs(tmp_path, "img")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError):
        read_in_root(tmp_path, "/fifo")  # does not block


def test_mkdirs_in_root_owns_new_dirs_and_stays_inside(tmp_path):
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    (root / "link").symlink_to("/../../outside")  # resolves to <root>/outside
    assert mkdirs_in_root(root, "/srv/a/b", uid=1000, gid=29) == ["/srv/a", "/srv/a/b"]
    st = os.stat(root / "srv/a/b")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 29, 0o755)
    assert os.stat(root / "srv").st_uid == 0  # existing dirs are left alone
    with pytest.raises(FileNotFoundError):  # dangling
        mkdirs_in_root(root, "/link/x", uid=5, gid=5)
    (root / "outside").mkdir()
    mkdirs_in_root(root, "/link/x", uid=5, gid=5)
    assert (root / "outside/x").is_dir() and not (tmp_path.parent / "outside").exists()
    (root / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        mkdirs_in_root(root, "/file/sub")
