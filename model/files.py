"""Atomic file writing (a file either exists complete or not at all) and output folders."""
import contextlib
import csv
import errno
import json
import logging
import os
import re
import socket
import tempfile
from pathlib import Path

from model.errors import UserError

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)

_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EEXIST: "a file is in the way",
            errno.ENOTDIR: "a file is in the way"}


def _reason(e):
    return _REASONS.get(e.errno) or e.strerror or str(e)


def check_writable_dir(path):
    """UserError unless `path` is, or can be created as, a writable folder; creates nothing,
    so a script can check its outputs before it reads its inputs."""
    path = Path(path)
    probe = path
    while not probe.is_dir():
        if probe.exists() or probe.is_symlink():
            raise UserError(f"cannot create output directory {path}: {probe} exists and is "
                            "not a folder")
        if probe.parent == probe:
            raise UserError(f"cannot create output directory {path}: {probe} does not exist")
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == path:
            raise UserError(f"output directory is not writable: {path}")
        raise UserError(f"cannot create output directory {path}: {probe} is not writable")
    return path


def ensure_writable_dir(path):
    """Create `path` if needed; UserError (one line) if it cannot be created or written: a
    file in the way, no permission, a read-only file system, no space left."""
    path = check_writable_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {_reason(e)}") from None
    return path


def create_new_dir(path):
    """Create the folder `path`, which must not exist yet: mkdir is atomic, so two runs started
    together never get the same folder. False when something exists at `path` already;
    UserError (one line) when it cannot be created for another reason."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return False
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {_reason(e)}") from None
    return True


def _no_space(e):
    text = str(e)
    return (getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
            or "No space left on device" in text or "errno = 28," in text)


def _host_token():
    """This machine's name as it appears in temporary names: letters, digits and '-' only,
    so the names stay parseable."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:32].strip("-") or "host"


def temporary_prefix(path):
    """Start of the temporary names of `path`. The full name is
    `.<name>.<pid>@<host>.<random>.tmp`: a later run can tell the leftovers of a dead process
    on this machine from the files of a live one, and never judges another machine's (a
    shared file system) by a process id that means nothing here."""
    return f".{Path(path).name}."


def temporary_owner_tag(pid=None):
    """`<pid>@<host>`, the owner part of a temporary name (default: this process's)."""
    return f"{os.getpid() if pid is None else int(pid)}@{_host_token()}"


# <name>, <pid>, <host>: the random part is mkstemp's (letters, digits, '_')
_TEMPORARY_RE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)"
                           r"\.[A-Za-z0-9_]+\.tmp")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A folder that cannot be created or written, or a disk that fills up, is a UserError."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{temporary_prefix(path)}{temporary_owner_tag()}.",
                                   suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {_reason(e)}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and _no_space(e):
            raise UserError(f"cannot write {path}: no space left on device") from None
        raise


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's live process
        return True
    return True


def stale_temporary(name, of=None):
    """True when `name` is a temporary file name of atomic_path (of the file named `of`, when
    given) whose writing process, on this machine, has exited. A live process's, another
    machine's, or a name of another form (no process and host in it) is not stale."""
    match = _TEMPORARY_RE.fullmatch(name)
    return (match is not None and (of is None or match["name"] == of)
            and match["host"] == _host_token() and not _pid_alive(int(match["pid"])))


def _remove_stale(folder, of, what):
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.iterdir():
        if not stale_temporary(p.name, of) or not p.is_file():
            continue
        try:
            p.unlink()
            removed += 1
        except FileNotFoundError:     # another run swept it first
            pass
        except OSError as e:
            log.warning("could not remove the leftover temporary file %s: %s", p, _reason(e))
    if removed:
        log.info("removed %d temporary file(s) of %s left by dead runs", removed, what)
    return removed


def remove_stale_temporaries(path):
    """Delete the temporary files of `path` (atomic_path's names) whose writing process has
    exited; those of live processes and of other machines are kept. Returns the count
    removed (logged)."""
    path = Path(path)
    return _remove_stale(path.parent, path.name, path)


def remove_stale_temporaries_in(folder):
    """remove_stale_temporaries for every file of `folder` (a run folder in which a killed run
    may have left temporaries of several outputs). Returns the count removed."""
    return _remove_stale(folder, None, folder)


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent=None):
    write_text(path, json.dumps(obj, indent=indent))


def write_csv(path, rows, header=None):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def read_json(path, what="JSON file"):
    """Load JSON or raise UserError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} is not valid JSON: {path} ({e})") from None
