"""Campaign discovery: the one place that finds and validates a folder's campaign files.

Used by the Airflow DAG file and its error file, by ``llem-airflow pools`` and by the
results page, so they agree on which files are campaigns, which folder is meant, and
what is wrong with each file. A broken file is an error of that file only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from llem_core import __version__, env_names
from llem_core.cache import cache_root
from llem_core.campaign.loading import (
    CampaignFileError,
    FieldError,
    LoadedCampaign,
    parse_campaign_text,
    read_campaign_text,
)

CAMPAIGNS_ENV = env_names.CAMPAIGNS_DIR
PATTERNS = ("*.yaml", "*.yml")


@dataclass
class Campaign:
    """A valid campaign file with the text it was read from (the grid cache's key)."""

    loaded: LoadedCampaign
    text: str

    @property
    def path(self) -> Path:
        return self.loaded.path

    @property
    def name(self) -> str:
        return self.loaded.config.campaign


class NameTakenError(CampaignFileError):
    """A valid file whose campaign name an earlier file of its folder already holds."""


def campaigns_dir(default: Path | None = None) -> Path:
    """``$LLEM_CAMPAIGNS_DIR``, else ``default``; an error when neither is given."""
    env = os.environ.get(CAMPAIGNS_ENV)
    if env:
        return Path(env)
    if default is None:
        raise ValueError(f"no campaigns folder: set {CAMPAIGNS_ENV} or pass one")
    return default


def campaign_files(folder: Path) -> list[Path]:
    """Campaign files of a folder, sorted; hidden files (editor swap files) are skipped.

    Everything else named like a campaign is listed, a folder or a broken symlink too:
    reading it is then that file's error, as `llem validate` reports it, never a
    campaign silently missing.
    """
    found = {p for pattern in PATTERNS for p in folder.glob(pattern)
             if not p.name.startswith(".")}
    return sorted(found)


def _name_cache(text: str) -> Path:
    key = hashlib.sha256(f"{__version__}\0{text}".encode()).hexdigest()[:32]
    return cache_root() / "campaign-names" / key


def _known_name(text: str) -> str | None:
    """The campaign name a file of exactly this text had when it was valid, if seen."""
    try:
        return _name_cache(text).read_text(encoding="utf-8")
    except Exception:  # missing, unreadable, or no cache folder at all (no HOME)
        return None


def _remember_name(text: str, name: str) -> None:
    from llem_core.analysis.results import write_atomic

    # a read-only or absent cache only costs parse time
    with contextlib.suppress(Exception):
        write_atomic(_name_cache(text), name)


def iter_campaigns(folder: Path, only: str | None = None
                   ) -> tuple[list[Campaign], list[CampaignFileError]]:
    """Every valid campaign of ``folder`` and one error per file that is not one.

    A second file claiming a campaign name already taken is an error of that file: two
    DAGs cannot share an id and two campaigns must never share a results folder.

    ``only`` (a campaign name) returns just the campaign of that name, as the full walk
    would (the first valid file claiming it), and the errors of the files it read: what
    every Airflow task parses for its own DAG. A file whose exact text was once valid
    under another name is read and hashed but not validated again (the name is a function
    of the text; remembered in the cache folder by such walks only), so a task's parse
    grows with the number of campaign files by a read and a hash each, plus the files
    that are not valid campaigns.
    """
    campaigns: list[Campaign] = []
    errors: list[CampaignFileError] = []
    owners: dict[str, Path] = {}
    for path in campaign_files(folder):
        try:
            text = read_campaign_text(path)
            known = _known_name(text) if only is not None else None
            if only is not None and known not in (None, only):
                continue
            loaded = parse_campaign_text(text, path)
        except CampaignFileError as exc:
            errors.append(exc)
            continue
        except Exception as exc:  # one file's surprise must not hide the rest
            reason = (str(exc).splitlines() or [""])[0][:300]
            errors.append(CampaignFileError(str(path), [FieldError(
                "(file)", f"cannot be loaded: {type(exc).__name__}: {reason}")]))
            continue
        name = loaded.config.campaign
        if only is not None and known != name:
            _remember_name(text, name)
        if name in owners:
            errors.append(NameTakenError(str(path), [FieldError(
                "campaign", f"{name!r} is already used by {owners[name]}")]))
            continue
        owners[name] = path
        if only is not None and name != only:
            continue
        campaigns.append(Campaign(loaded, text))
        if only is not None:
            break  # later files claiming the name are their own errors, not this DAG's
    return campaigns, errors


def name_conflict(path: str | Path) -> CampaignFileError | None:
    """The error ``iter_campaigns`` gives ``path`` because an earlier file of its folder
    holds the same campaign name (so `llem validate` agrees with the DAG build)."""
    path = Path(path)
    if path.name.startswith(".") or not any(path.match(p) for p in PATTERNS):
        return None
    _, errors = iter_campaigns(path.parent)
    return next((exc for exc in errors
                 if isinstance(exc, NameTakenError) and Path(exc.file) == path), None)

