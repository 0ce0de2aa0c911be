"""Errors a user can cause. The CLI prints them as one line; nothing here wraps internal bugs."""


class HybridLMError(ValueError):
    """Base class for user-facing errors: the message names what is wrong and what is allowed."""


class ConfigError(HybridLMError):
    """An invalid model / run configuration."""


class CheckpointError(HybridLMError):
    """A checkpoint directory that cannot be read or written as asked."""


_USER_ERRNOS = {"EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENAMETOOLONG", "ENOENT", "ENOTDIR", "EISDIR", "EEXIST"}


def file_error_line(err: OSError) -> str | None:
    """One line for an operating-system refusal about a file the user named (a read-only or missing directory, a
    full disk, a file where a directory belongs), or None when `err` is not one of those."""
    import errno

    name = errno.errorcode.get(err.errno or 0)
    if name not in _USER_ERRNOS:
        return None
    where = err.filename if err.filename is not None else "a file"
    also = f" -> {err.filename2}" if getattr(err, "filename2", None) else ""
    return f"cannot write or read {where}{also}: {err.strerror or name}"


def check_output_file(path, what: str = "output file") -> None:
    """Before a long computation: `path` can be created (its directory exists and takes a new file; it is not a
    directory). A real probe (a temporary file), since permission bits do not tell what a filesystem refuses."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise HybridLMError(f"{what} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HybridLMError(f"{what} {path}: directory {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hybridlm-probe-", dir=parent)
    except OSError as err:
        raise HybridLMError(f"{what} {path}: cannot write in {parent} ({err.strerror})") from None
    os.close(fd)
    os.unlink(probe)
