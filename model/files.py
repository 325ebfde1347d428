"""Atomic file writing: a file either exists complete or not at all."""
import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path

from model.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


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
