"""Reading a campaign file's text: bounded in size, and only from a regular file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from llem_core.campaign.errors import CampaignFileError, FieldError
from llem_core.campaign.yaml_safe import MAX_FILE_BYTES

__all__ = ["read_campaign_text"]


def read_campaign_text(path: str | Path) -> str:
    """A campaign file's text, read no further than the size limit.

    Opened without blocking and refused unless a regular file: a FIFO or a device named
    ``x.yaml`` would otherwise hang or flood the DAG processor.
    """
    file, p = str(path), Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            what = "a folder" if stat.S_ISDIR(mode) else "a special file"
            raise CampaignFileError(file, [FieldError("(file)", f"{what}, not a file")])
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        why = "broken symlink" if p.is_symlink() else "no such file"
        raise CampaignFileError(file, [FieldError("(file)", why)]) from None
    except OSError as exc:
        raise CampaignFileError(file, [FieldError("(file)", f"cannot read: {exc}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise CampaignFileError(
            file, [FieldError("(file)", f"larger than {MAX_FILE_BYTES} bytes")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CampaignFileError(file, [FieldError("(file)", f"cannot read: {exc}")]) from None
