"""Checks on the files a user names, with messages that say what is wrong. Standard library only: the worker
(audio, video) and Blender's side (before a job is sent) share it."""

from __future__ import annotations

import os


def check_input_file(path: str | os.PathLike | None, kind: str = "audio", error: type[Exception] = ValueError) -> str:
    """The path of an existing, readable, non-empty file, or ``error`` saying what is wrong with it."""
    path = os.fspath(path) if path is not None else ""
    article = "an" if kind[:1] in "aeiou" else "a"
    if not path:
        raise error(f"no {kind} file was given")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise error(f"{kind} file {path} is a link to nothing (broken link)") from None
        raise error(f"{kind} file not found: {path}") from None
    except PermissionError:
        raise error(f"{kind} file {path} cannot be reached: permission denied (on it or a folder above it)") from None
    except OSError as exc:  # a symlink loop, a name too long, ...
        raise error(f"{kind} file {path} cannot be opened: {exc.strerror or exc}") from None
    if os.path.isdir(path):
        raise error(f"{path} is a folder, not {article} {kind} file")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise error(f"{kind} file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise error(f"{kind} file {path} cannot be opened: {exc.strerror or exc}") from None
    if st.st_size == 0:
        raise error(f"{kind} file {os.path.basename(path) or path} is empty (0 bytes)")
    return path


def sentence(message: str) -> str:
    """``message`` with its first letter capitalised (the checks' messages read as part of a sentence)."""
    return message[:1].upper() + message[1:]
