"""Who is who in a pooled results table: configuration identity, labels, the reference.

A configuration is identified by ``(campaign, config_hash)``: two campaigns may use the
same name for different settings, and they stay two rows. ``config_label`` is the name
where it is unambiguous, ``campaign/name`` where names collide across campaigns, and
``campaign/name@hash`` where one campaign reused a name for different settings.
Comparisons pair cycles by ``(campaign, run_id, cycle)``.
"""

from __future__ import annotations

import pandas as pd

IDENTITY = ("campaign", "config_hash")
PAIR_KEYS = ("campaign", "run_id", "cycle")
DEFAULT_RULE = "alphabetically first configuration (set compare_to to choose)"


def _disambiguate(ids: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(campaign, config_hash) -> label, unique across ``ids``."""
    labels = {}
    for name, g in ids.groupby("config_name", sort=False):
        keys = list(zip(g["campaign"], g["config_hash"], strict=True))
        if len(keys) == 1:
            labels[keys[0]] = str(name)
            continue
        per_campaign = g.groupby("campaign")["config_hash"].nunique()
        for campaign, chash in keys:
            label = f"{campaign}/{name}" if campaign else str(name)
            if per_campaign[campaign] > 1 or not campaign:
                label += f"@{str(chash)[:8]}"
            labels[(campaign, chash)] = label
    return _unique(labels)


def _unique(labels: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """Labels that still collide (a name may itself hold '/' or '@', e.g. ``B/x`` in
    campaign A vs ``x`` in campaign B) get the full identity: never merged."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for key, label in labels.items():
        seen.setdefault(label, []).append(key)
    out = dict(labels)
    for label, keys in seen.items():
        if len(keys) > 1:
            for campaign, chash in keys:
                out[(campaign, chash)] = f"{label} [{campaign}@{chash}]"
    return out


def identify(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``campaign``, ``run_id``, ``config_hash`` filled and ``config_label``."""
    out = df.copy()
    for col in ("campaign", "run_id"):
        out[col] = out[col].fillna("").astype(str) if col in out else ""
    if "config_hash" not in out:
        out["config_hash"] = out["config_name"].astype(str)
    if out.empty:
        out["config_label"] = pd.Series(dtype=str)
        return out
    ids = out.drop_duplicates(list(IDENTITY))[["campaign", "config_hash", "config_name"]]
    labels = _disambiguate(ids)
    out["config_label"] = [labels[k] for k in zip(out["campaign"], out["config_hash"],
                                                  strict=True)]
    return out


def resolve_reference(ok: pd.DataFrame, reference: str | None) -> tuple[str, str]:
    """(label of the reference configuration, the rule that chose it).

    ``reference`` may be a label, a configuration name (if only one configuration has
    it) or a config hash. None picks the alphabetically first label: deterministic
    whatever the ordering of the plan.
    """
    labels = sorted(set(ok["config_label"]))
    if reference is None:
        return labels[0], DEFAULT_RULE
    if reference in labels:
        return reference, "compare_to"
    for col in ("config_name", "config_hash"):
        hits = sorted(set(ok.loc[ok[col].astype(str) == reference, "config_label"]))
        if len(hits) == 1:
            return hits[0], "compare_to"
        if len(hits) > 1:
            raise ValueError(f"reference configuration {reference!r} names "
                             f"{len(hits)} configurations ({', '.join(hits)}): give one "
                             "of these labels")
    raise ValueError(f"reference configuration {reference!r} not in the results "
                     f"({', '.join(labels)})")
