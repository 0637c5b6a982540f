"""Who may use a store's files: their modes, a shared group, and the refusal
of files walq did not make.

A store is private to its owner by default: directories 0700, files 0600.
Shared with a group (``walq.open(path, group=...)``) its directories are
2770 - setgid, so every file created in them belongs to the group - and its
files 0660.  A log reads the policy from its own directory's mode
(``Access.of_directory``), so every process, and every file any of them
creates later (segments and their ``.tmp``, checkpoints, ``log.ctl``, lock
files, torn-tail copies, new queues' directories), follows the store's
policy.  Modes are set explicitly (fchmod, chmod), never left to the umask,
which can only take bits away.

Every file is opened with O_NOFOLLOW and checked with fstat before use: a
symlink, anything but a regular file, or a file owned by a user other than
the directory's owner, this process's user or root (in a shared store: or
outside its group) raises UnsafeFile naming it.  Files walq replaces (the
``.tmp`` of a segment or checkpoint) are unlinked and created with O_EXCL,
so a planted name is never written through.
"""

from __future__ import annotations

import errno
import grp
import os
import shutil
import stat
from dataclasses import dataclass

from walq.errors import InvalidParameter, ReadOnlyStore, StoreFull, UnsafeFile

#: errno values that mean "no space": a full file system or a quota.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: File systems that cannot hold a store: kernel interfaces, not storage.
_PSEUDO_FS = frozenset(("proc", "sysfs", "devpts", "devtmpfs", "cgroup", "cgroup2", "debugfs", "tracefs",
                        "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "binfmt_misc",
                        "efivarfs", "autofs", "rpc_pipefs", "nsfs"))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass(frozen=True)
class Access:
    """The file policy of one store directory.

    gid: the group sharing the store, or None (owner only).
    owner: the uid owning the directory; its files may belong to it, to
    this process's user or to root.
    readonly: refuse every creation and open files for reading only.
    """

    gid: int | None = None
    owner: int | None = None
    readonly: bool = False

    @property
    def dir_mode(self) -> int:
        """0o2770 in a shared store, 0o700 otherwise."""
        return 0o2770 if self.gid is not None else 0o700

    @property
    def file_mode(self) -> int:
        """0o660 in a shared store, 0o600 otherwise."""
        return 0o660 if self.gid is not None else 0o600

    @classmethod
    def of_directory(cls, path: str, readonly: bool = False) -> "Access":
        """The policy a directory's mode says: shared with its group if it
        is setgid and group-accessible.  The directory itself must pass the
        be a directory itself, not a symlink to one (lstat).  Its owner is
        the store's owner, whose files every user of the store trusts."""
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise UnsafeFile(f"{path} is {_kind(st.st_mode)}, not a directory walq made; refusing to use it", path)
        shared = st.st_mode & stat.S_ISGID and st.st_mode & 0o070
        return cls(gid=st.st_gid if shared else None, owner=st.st_uid, readonly=readonly)

    @classmethod
    def inherited(cls, path: str) -> "Access":
        """The policy for a new directory at ``path``: its parent's if the
        parent is a shared store directory, private otherwise."""
        try:
            st = os.stat(os.path.dirname(os.path.abspath(path)))
        except OSError:
            return cls()
        shared = st.st_mode & stat.S_ISGID and st.st_mode & 0o070
        return cls(gid=st.st_gid) if shared else cls()

    def _trusts(self, st: os.stat_result) -> bool:
        if st.st_uid in (os.geteuid(), 0, self.owner):
            return True
        return self.gid is not None and st.st_gid == self.gid

    def check(self, fd: int, path: str) -> os.stat_result:
        """fstat's verdict on an open file: UnsafeFile unless it is a regular
        file owned by a permitted user."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path} is {_kind(st.st_mode)}, not a regular file walq made; refusing to use it",
                             path)
        if not self._trusts(st):
            raise UnsafeFile(f"{path} is owned by uid {st.st_uid}, not by this store's user or root; "
                             "refusing to use it", path)
        return st

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        """Opens an existing file (read-only in a read-only store), refusing
        symlinks and anything ``check`` refuses."""
        if self.readonly:
            flags = (flags & ~_WRITE_FLAGS) | os.O_RDONLY
        return self._open(path, flags)

    def create(self, path: str, flags: int = os.O_RDWR, exclusive: bool = False) -> int:
        """Opens ``path``, creating it with the store's file mode if missing.

        ``exclusive``: the name must be new (O_EXCL; the caller unlinked
        any leftover).  ReadOnlyStore in a read-only store.  A file this
        call creates gets the store's mode; an existing one is changed only
        in a shared store (as ``make_dir`` does).
        """
        if self.readonly:
            raise ReadOnlyStore(f"cannot create {path}: the store is open read-only")
        while True:
            try:
                fd = self._open(path, flags | os.O_CREAT | os.O_EXCL, self.file_mode)
                created = True
                break
            except FileExistsError:
                if exclusive:
                    raise
            try:
                fd = self._open(path, flags)  # a link fails here (O_NOFOLLOW), as it should
                created = False
                break
            except FileNotFoundError:
                continue  # removed between the two opens: create it after all
        try:
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and (created or self.gid is not None):
                if self.gid is not None and st.st_gid != self.gid:
                    _try(os.fchown, fd, -1, self.gid)
                if stat.S_IMODE(st.st_mode) != self.file_mode:
                    os.fchmod(fd, self.file_mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, path: str, flags: int, mode: int = 0o600) -> int:
        # O_NONBLOCK: opening a planted FIFO must not hang; it is cleared
        # once fstat shows a regular file (where it would mean nothing).
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(f"{path} is a symbolic link; walq never follows links in a store", path) from None
            if exc.errno == errno.EISDIR:
                raise UnsafeFile(f"{path} is a directory, not a regular file walq made; refusing to use it",
                                 path) from None
            if exc.errno == errno.ENXIO:  # a FIFO without a reader, or a socket
                raise UnsafeFile(f"{path} is a FIFO or socket, not a regular file walq made; refusing to use it",
                                 path) from None
            if exc.errno in NO_SPACE:
                raise StoreFull(exc.errno, path, f"creating {os.path.basename(path)}") from None
            if exc.errno == errno.EROFS and flags & os.O_CREAT:
                raise ReadOnlyStore(f"cannot create {path}: read-only file system") from None
            raise
        try:
            self.check(fd, path)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def make_dir(self, path: str) -> None:
        """Creates a directory with the store's mode (and group), or checks
        an existing one; ReadOnlyStore if it is missing in a read-only store.

        A directory this call creates gets the store's mode; an existing one
        is changed only in a shared store (to 2770 and the group): an
        existing private store's modes are its owner's choice.
        """
        created = False
        if not os.path.lexists(path):
            if self.readonly:
                raise ReadOnlyStore(f"cannot create {path}: the store is open read-only")
            parent = os.path.dirname(os.path.abspath(path))
            try:
                # Missing parents are the caller's directories, not the
                # store's: they get the usual mode (as os.makedirs gives).
                os.makedirs(parent, exist_ok=True)
                os.mkdir(path, self.dir_mode)
                created = True
                # The new entry is durable before anything names it (a
                # catalog record naming a queue's directory, for one).
                fsync_dir(parent)
            except FileExistsError:
                pass  # another process made it first
            except OSError as exc:
                if exc.errno in NO_SPACE:
                    raise StoreFull(exc.errno, path, "a directory") from None
                raise
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise UnsafeFile(f"{path} is {_kind(st.st_mode)}, not a directory walq made; refusing to use it", path)
        if not self._trusts(st):
            raise UnsafeFile(f"{path} is owned by uid {st.st_uid}, not by this store's user or root", path)
        if st.st_uid == os.geteuid() and not self.readonly:
            if self.gid is not None and st.st_gid != self.gid:
                _try(os.chown, path, -1, self.gid, follow_symlinks=False)
            if stat.S_IMODE(st.st_mode) != self.dir_mode and (created or self.gid is not None):
                os.chmod(path, self.dir_mode)


def fsync_dir(path: str) -> None:
    """fsyncs a directory: the entries created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Suffix of a deleted queue's, topic's or bus's directory while it is removed.
DELETED = ".deleted"


def remove_aside(path: str) -> None:
    """Removes a deleted object's directory: renamed to ``<path>.deleted``
    first (and the parent fsynced), so that no process can create a file
    under its path again; processes that still hold its files keep their
    descriptors until they notice the deletion."""
    trash = path + DELETED
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        pass  # removed already (another process, or a crash after the rename)
    else:
        fsync_dir(os.path.dirname(path))
    shutil.rmtree(trash, ignore_errors=True)


def finish_deletions(root: str, deleted: set, live: set) -> None:
    """Finishes deletions a crash interrupted under ``root``: removes
    renamed directories, and those whose uid (``%016x`` names) is in
    ``deleted`` and not in ``live``."""
    for name in os.listdir(root):
        if name.endswith(DELETED):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            continue
        try:
            uid = int(name, 16)
        except ValueError:
            continue
        if uid in deleted and uid not in live:
            remove_aside(os.path.join(root, name))


def resolve_group(group) -> int | None:
    """A group name or gid as a gid; InvalidParameter if there is no such group."""
    if group is None:
        return None
    if isinstance(group, bool) or not isinstance(group, (int, str)):
        raise InvalidParameter(f"group must be a group name or gid; got {type(group).__name__}")
    try:
        return grp.getgrnam(group).gr_gid if isinstance(group, str) else grp.getgrgid(group).gr_gid
    except (KeyError, OverflowError, ValueError):
        raise InvalidParameter(f"no such group: {group!r}") from None


def check_store_path(path: str) -> None:
    """InvalidParameter unless ``path`` is a directory, or can become one,
    on a file system that stores files (not /proc, /sys and the like).
    Nothing is created."""
    probe = os.path.abspath(path)
    if os.path.lexists(probe) and not os.path.isdir(probe):
        raise InvalidParameter(f"store path {path!r} exists and is not a directory")
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
        if os.path.lexists(probe) and not os.path.isdir(probe):
            raise InvalidParameter(f"store path {path!r} is under {probe!r}, which is not a directory")
    fs = _fs_type(os.path.realpath(probe))
    if fs in _PSEUDO_FS:
        raise InvalidParameter(f"store path {path!r} is on a {fs} file system, which cannot hold files")


def _fs_type(path: str) -> str | None:
    """The type of the file system mounted deepest above ``path`` (from
    /proc/self/mounts; None where that cannot be read)."""
    best, kind = "", None
    try:
        with open("/proc/self/mounts", "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].decode("utf-8", "surrogateescape").replace("\\040", " ")
                inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, kind = mnt, parts[2].decode("ascii", "replace")
    except OSError:
        return None
    return kind


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _try(fn, *args, **kw) -> None:
    """chown to the store's group: fails (EPERM) for a user outside it,
    whose files the setgid directory gives the group anyway."""
    try:
        fn(*args, **kw)
    except PermissionError:
        pass


def prepare_store(path: str, group=None, readonly: bool = False) -> Access:
    """Checks a store path and makes its directories (root, ``queues``,
    ``catalog``); returns the store's policy.

    ``group`` (a name or gid) shares the store with that group; without it
    an existing store keeps the policy its root directory's mode says, and a
    new one is private.  Nothing is created when ``readonly``.
    """
    check_store_path(path)
    gid = resolve_group(group)
    root = os.path.realpath(path)  # the root alone may be reached through a link
    if gid is not None:
        access = Access(gid=gid, owner=os.geteuid(), readonly=readonly)
    elif os.path.isdir(root):
        access = Access.of_directory(root, readonly=readonly)
    else:
        access = Access(owner=os.geteuid(), readonly=readonly)
    access.make_dir(root)
    for sub in ("queues", "catalog"):
        access.make_dir(os.path.join(root, sub))
    return access
