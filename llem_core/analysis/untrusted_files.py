"""Reading a results tree, which every experiment can write: untrusted input.

Any experiment (a container or a process) can write its campaign's results folder, so
whatever the folder holds is hostile until checked, for everyone who reads it: the
aggregate, the report, the history, the ``/llem`` pages and the CLI. They read it only
through here, by these rules:

- A path is opened from a *trusted* folder (the campaign's ``results_dir``, chosen by the
  deployment and checked against its allow-list, or a folder the user named on the
  command line), one component at a time relative to the folder above, held open, with
  ``O_NOFOLLOW``: a symbolic link anywhere below the trusted folder, to a file or to a
  folder, is never followed. A ``..`` component is refused.
- Only a regular file with one name is read: a FIFO, socket or device is refused from its
  ``lstat`` before it is opened (and opened without blocking, in case it was swapped in
  since), and a second hard link may name any file of the same filesystem. A file is
  read no further than a cap per kind of file, however large it is or grows.
- Listing a folder yields real folders and regular files only; links, special files,
  names that are not UTF-8 and folders past a depth or entry count are listed problems.
- JSON is UTF-8, at most :data:`MAX_JSON_DEPTH` deep, with no lone surrogate escape.

Every refusal is an :class:`Unreadable` (a ``ValueError``) whose message says why; a file
or folder that is simply absent raises ``FileNotFoundError`` as the OS would.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Caps per kind of file (bytes). A result holds per-request lists (a long serving run: a
# few MB); a plan lists every run of a grid of up to 10,000 points over cycles.
MAX_RESULT_BYTES = 64 * 2**20
MAX_PLAN_BYTES = 256 * 2**20
MAX_SUMMARY_BYTES = 64 * 2**20  # aggregate.json, summaries
MAX_DOWNLOAD_BYTES = 2 * 2**30  # a file the pages hand out as it is (parquet, csv)
MAX_JSON_DEPTH = 64
MAX_DEPTH = 12  # folders below the folder searched (<campaign>/<run>/<hash>/ is 3)
MAX_ENTRIES = 200_000  # entries a search looks at before it stops and says so

_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20


class Unreadable(ValueError):
    """A file or folder of a results tree that is not read; the message says why."""


def kind(mode: int) -> str:
    """What a file mode is, as text."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def shown(name: str | os.PathLike[str]) -> str:
    """A path as printable text: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(name).decode("utf-8", errors="replace")


def _text_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False
    return True


def _parts(rel: str | os.PathLike[str]) -> list[str]:
    parts = [p for p in os.fspath(rel).split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Unreadable(f"{shown(rel)}: a '..' component: not followed")
    if any("\x00" in p for p in parts):
        raise Unreadable("a NUL byte in the path")
    return parts


class Folder:
    """An open folder of a results tree: a descriptor, and the path it is shown as."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refusal(dir_fd: int, name: str, what: str) -> Unreadable | None:
    """Why ``name`` in ``dir_fd`` is not ``what`` (from its lstat), or None if it is."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return None
    want = stat.S_ISDIR if what == "folder" else stat.S_ISREG
    if want(mode):
        return None
    verb = "followed" if stat.S_ISLNK(mode) else "read"
    return Unreadable(f"{shown(name)}: {kind(mode)}, not a {what}: not {verb}")


def _open_dir_at(dir_fd: int, name: str) -> int:
    if not _text_name(name):
        raise Unreadable(f"{shown(name)}: the name is not UTF-8 text: not opened")
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refusal(dir_fd, name, "folder") or Unreadable(
                f"{shown(name)}: not a folder: not followed") from None
        raise


def open_folder(path: str | os.PathLike[str],
                trusted: str | os.PathLike[str] | None = None) -> Folder:
    """Open ``path`` as a folder of a results tree.

    ``trusted`` (default: ``path`` itself) is opened as the OS resolves it: the deployment
    or the user chose it. ``path`` must lie under it (as written, ``..`` resolved as
    text); every component below it is opened without following links.
    """
    raw = os.fspath(path)
    if "\x00" in raw:
        raise Unreadable("a NUL byte in the path")
    p = posixpath.normpath(os.path.abspath(raw))
    top = p if trusted is None else posixpath.normpath(os.path.abspath(os.fspath(trusted)))
    if p != top and not p.startswith(top.rstrip("/") + "/"):
        raise Unreadable(f"{shown(p)} is not inside {shown(top)}")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    folder = Folder(fd, Path(top))
    rest = p[len(top):]
    if rest.strip("/"):
        try:
            below = open_below(folder, rest)
        finally:
            folder.close()
        return Folder(below.fd, Path(p))
    return folder


def open_below(folder: Folder, rel: str | os.PathLike[str]) -> Folder:
    """The folder ``rel`` inside ``folder``, every component a real folder (no link)."""
    fd = os.dup(folder.fd)
    try:
        for part in _parts(rel):
            nxt = _open_dir_at(fd, part)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return Folder(fd, folder.path.joinpath(*_parts(rel)))


def _checked(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(f"{kind(st.st_mode)}, not a regular file: not read")
    if st.st_nlink != 1:
        raise Unreadable(f"a file with {st.st_nlink} hard links (a second name of some "
                         "other file?): not read")
    if st.st_size > limit:
        raise Unreadable(f"larger than {limit} bytes ({st.st_size}): not read")


def _open_in(dir_fd: int, name: str, limit: int) -> tuple[int, os.stat_result]:
    """(descriptor, fstat) of the regular file ``name`` directly in the open folder."""
    if not _text_name(name):
        raise Unreadable("the name is not UTF-8 text: not read")
    # lstat first: a FIFO or a device is refused before it is opened at all.
    _checked(os.stat(name, dir_fd=dir_fd, follow_symlinks=False), limit)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # swapped for a link since the lstat
            raise Unreadable("a symbolic link, not a regular file: not read") from None
        raise
    try:
        st = os.fstat(fd)
        _checked(st, limit)  # what was opened, should it have been swapped in meanwhile
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_file(folder: Folder, rel: str | os.PathLike[str], limit: int
              ) -> tuple[int, os.stat_result]:
    """(descriptor, its fstat) of the regular file ``rel`` inside ``folder``; the caller
    closes it. Never follows a link, never opens a FIFO, socket or device."""
    parts = _parts(rel)
    if not parts:
        raise Unreadable("an empty file name")
    with open_below(folder, "/".join(parts[:-1])) as parent:
        return _open_in(parent.fd, parts[-1], limit)


def _read_fd(fd: int, limit: int) -> bytes:
    try:
        chunks: list[bytes] = []
        got = 0
        while got <= limit:  # a file that grows while read is still read only so far
            chunk = os.read(fd, min(_CHUNK, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    if got > limit:
        raise Unreadable(f"grew past {limit} bytes while read: not read")
    return b"".join(chunks)


def read_file(folder: Folder, rel: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file ``rel`` inside ``folder``, at most ``limit``."""
    fd, _ = open_file(folder, rel, limit)
    return _read_fd(fd, limit)


def read_files(folder: Folder, rels: list[str], limit: int
               ) -> Iterator[tuple[str, bytes | OSError | ValueError]]:
    """(rel, its bytes or why not) for each of ``rels`` inside ``folder``, read as
    :func:`read_file` reads one, in order; a folder shared by consecutive files (a
    :func:`walk` listing: sorted) is opened once for them, not once per file."""
    parent: Folder | None = None
    parent_rel: str | None = None
    try:
        for rel in rels:
            try:
                parts = _parts(rel)
                if not parts:
                    raise Unreadable("an empty file name")
                here = "/".join(parts[:-1])
                if parent is None or here != parent_rel:
                    if parent is not None:
                        parent.close()
                        parent = None
                    parent, parent_rel = open_below(folder, here), here
                fd, _ = _open_in(parent.fd, parts[-1], limit)
                yield rel, _read_fd(fd, limit)
            except (OSError, ValueError) as exc:
                yield rel, exc
    finally:
        if parent is not None:
            parent.close()


def iter_fd(fd: int, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of an open file in chunks, then close it (a download)."""
    try:
        left = size
        while left > 0:
            chunk = os.read(fd, min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


def _check_tree(data: Any) -> None:
    """Depth and text of parsed JSON, without recursion (value by value: the slow path)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise Unreadable(f"JSON nested deeper than {MAX_JSON_DEPTH} levels: not read")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            for s in (k, v):
                if isinstance(s, str) and not s.isascii() and not _text_name(s):
                    raise Unreadable("JSON text holds a lone surrogate (not Unicode text): "
                                     "not read")
            if isinstance(v, dict | list):
                stack.append((v, depth + 1))


# A lone surrogate can only come from a \uD800-\uDFFF escape (strict UTF-8 decoding refuses
# an encoded one); strings are cut out before brackets are counted for the depth.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _check_text(text: str, data: Any) -> None:
    """What :func:`_check_tree` checks, read from the JSON text that ``data`` was parsed
    from: its bracket depth outside strings, and whether it escapes a surrogate at all.
    A result file's tree holds thousands of values; its text a few dozen brackets."""
    if _SURROGATE_ESCAPE.search(text):  # rare: a pair (an emoji) or a lone one
        _check_tree(data)
        return
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # no deeper than its brackets
        return
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if len(brackets) > 2 * MAX_JSON_DEPTH and max(itertools.accumulate(
            map(_BRACKET_STEP.__getitem__, brackets))) > MAX_JSON_DEPTH:
        raise Unreadable(f"JSON nested deeper than {MAX_JSON_DEPTH} levels: not read")


def parse_json(raw: bytes, parse_constant: Callable[[str], Any] | None = None) -> Any:
    """JSON from untrusted bytes: UTF-8, bounded depth, real Unicode; Unreadable if not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=parse_constant)
    except json.JSONDecodeError as exc:
        raise Unreadable(f"corrupt JSON: {exc.msg} (line {exc.lineno}, column "
                         f"{exc.colno})") from None
    except RecursionError:
        raise Unreadable(f"JSON nested deeper than {MAX_JSON_DEPTH} levels: not read") from None
    if isinstance(data, dict | list):
        _check_text(text, data)
    return data


def read_json(folder: Folder, rel: str | os.PathLike[str], limit: int,
              parse_constant: Callable[[str], Any] | None = None) -> Any:
    return parse_json(read_file(folder, rel, limit), parse_constant)


def _leads_to_folder(entry: os.DirEntry[str]) -> bool:
    """Whether a link names a folder (a stat of its target: nothing is opened or read)."""
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def walk(folder: Folder, want: Callable[[str], bool], *, max_depth: int = MAX_DEPTH,
         max_entries: int = MAX_ENTRIES, stats: dict[str, os.stat_result] | None = None
         ) -> tuple[list[str], list[tuple[str, str]]]:
    """Regular files under ``folder`` whose name ``want`` accepts, as relative paths
    (sorted), and (relative path, reason) of what was not looked into or not taken.

    Links are never followed; one is listed when its name is wanted or it names a folder
    (a linked run folder would otherwise be silently absent). A FIFO, socket or device is
    listed when its name is wanted. ``stats``: filled with each listed file's ``lstat``.
    """
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    seen = 0
    stack: list[tuple[int, str, int]] = [(os.dup(folder.fd), "", 0)]
    try:
        while stack:
            fd, prefix, depth = stack.pop()
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                problems.append((prefix or ".", f"cannot list: {exc.strerror or exc}"))
                os.close(fd)
                continue
            try:
                for e in entries:
                    seen += 1
                    rel = f"{prefix}{e.name}"
                    if seen > max_entries:
                        problems.append((prefix or ".", f"more than {max_entries} entries: "
                                         "the rest was not searched"))
                        for other, _, _ in stack:
                            os.close(other)
                        stack.clear()
                        break
                    if not _text_name(e.name):
                        problems.append((shown(rel), "the name is not UTF-8 text: skipped"))
                    elif e.is_symlink():
                        if want(e.name) or _leads_to_folder(e):
                            problems.append((rel, "a symbolic link: not followed"))
                    elif e.is_dir(follow_symlinks=False):
                        if depth + 1 > max_depth:
                            problems.append((rel, f"deeper than {max_depth} folders: not "
                                             "searched"))
                            continue
                        try:
                            stack.append((_open_dir_at(fd, e.name), rel + "/", depth + 1))
                        except (OSError, ValueError) as exc:
                            problems.append((rel, str(exc)))
                    elif want(e.name):
                        if e.is_file(follow_symlinks=False):
                            files.append(rel)
                            if stats is not None:
                                try:
                                    stats[rel] = e.stat(follow_symlinks=False)
                                except OSError as exc:  # removed since it was listed
                                    files.pop()
                                    problems.append((rel, f"cannot stat: {exc.strerror}"))
                        else:
                            mode = e.stat(follow_symlinks=False).st_mode
                            problems.append((rel, f"{kind(mode)}, not a regular file: "
                                             "not read"))
            finally:
                os.close(fd)
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return sorted(files), problems


def fingerprint(folder: Folder, want: Callable[[str], bool]) -> tuple[str, int]:
    """(digest, newest change time in ns) of what :func:`walk` finds under ``folder``:
    every wanted regular file's path, device, inode, size, modification and change time
    (its ``lstat``: no link followed), and every problem listed. A file added, removed,
    renamed, replaced (a new inode) or written (a new change time, which no writer can
    set back) gives another digest; the newest change time says whether a write could
    still be under way within the same tick of the clock (see ``PageCache``)."""
    stats: dict[str, os.stat_result] = {}
    files, problems = walk(folder, want, stats=stats)
    h = hashlib.sha256()
    newest = 0
    for rel in files:
        st = stats[rel]
        newest = max(newest, st.st_ctime_ns, st.st_mtime_ns)
        h.update(f"{rel}\0{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:"
                 f"{st.st_ctime_ns}:{st.st_nlink}:{st.st_mode}\n".encode("utf-8", "replace"))
    for rel, why in problems:
        h.update(f"!{rel}\0{why}\n".encode("utf-8", "replace"))
    return h.hexdigest(), newest


def regular_files(folder: Folder, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are regular files directly in ``folder`` (no link followed)."""
    out = []
    for n in names:
        try:
            st = os.stat(n, dir_fd=folder.fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append(n)
    return out


def subfolders(folder: Folder) -> tuple[list[tuple[str, float]], list[tuple[str, str]]]:
    """(name, mtime) of the real folders directly in ``folder``, and what else was
    skipped (links to folders, names that are not text)."""
    found: list[tuple[str, float]] = []
    problems: list[tuple[str, str]] = []
    with os.scandir(folder.fd) as it:
        for e in it:
            if not _text_name(e.name):
                problems.append((shown(e.name), "the name is not UTF-8 text: skipped"))
            elif e.is_symlink():
                problems.append((e.name, "a symbolic link: not followed"))
            elif e.is_dir(follow_symlinks=False):
                try:
                    found.append((e.name, e.stat(follow_symlinks=False).st_mtime))
                except OSError:  # removed while listed
                    continue
    return found, problems
