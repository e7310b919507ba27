"""Settings that travel with an upload: a profile chosen by the folder, and the object's own metadata.

A run started by an upload (a notification, or the reconciler) has no form. Its settings are, for
each field, the first of:

1. the run's conf, where it names the field (a form or REST trigger: the user chose);
2. the object's user metadata ``x-amz-meta-reelforge-<field>`` (``reelforge-scale: 2``,
   ``reelforge-frame-rate: 25``), set by whoever uploads;
3. the profile of the longest matching folder under the ingest prefix (``x2/`` → ``{"scale": 2}``),
   from the Variable ``reelforge_sr_profiles`` (JSON), else :data:`DEFAULT_PROFILES`;
4. the DAG's defaults.

Everything is then validated as strictly as the form (``job.result_settings``); an unknown
``reelforge-*`` metadata key or profile field is refused, naming where it came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from reelforge.sr.form import PRIORITY_NICE, RESULT_FIELDS
from reelforge.sr.job import InvalidSettingsError

METADATA_PREFIX = "reelforge-"
PROFILES_VARIABLE = "reelforge_sr_profiles"
#: Fields an upload may set (what changes the result, and the scheduling priority).
UPLOAD_FIELDS = frozenset(RESULT_FIELDS) | {"priority"}
#: Folders under the ingest prefix that choose a scale without any metadata.
DEFAULT_PROFILES: dict[str, dict[str, Any]] = {"x2/": {"scale": 2}, "x3/": {"scale": 3}, "x4/": {"scale": 4}}


def _checked(fields: Mapping[str, Any], origin: str) -> dict[str, Any]:
    unknown = sorted(set(fields) - UPLOAD_FIELDS)
    if unknown:
        raise InvalidSettingsError(f"{origin}: unknown setting(s) {unknown}; allowed: {sorted(UPLOAD_FIELDS)}")
    if "priority" in fields and fields["priority"] not in PRIORITY_NICE:
        raise InvalidSettingsError(f"{origin}: priority {fields['priority']!r}; allowed: {sorted(PRIORITY_NICE)}")
    return dict(fields)


def parse_profiles(text: str | None) -> dict[str, dict[str, Any]]:
    """The profiles Variable (JSON object: folder → fields), checked; ``None``/empty → the defaults."""
    if not text:
        return DEFAULT_PROFILES
    try:
        profiles = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidSettingsError(f"Variable {PROFILES_VARIABLE} is not JSON: {err}") from err
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise InvalidSettingsError(f"Variable {PROFILES_VARIABLE} must map folders to objects of settings")
    for folder, fields in profiles.items():
        if not folder.endswith("/") or folder.startswith("/"):
            raise InvalidSettingsError(f"Variable {PROFILES_VARIABLE}: folder {folder!r} must end with '/' and be "
                                       "relative to the ingest prefix")
        _checked(fields, f"profile {folder!r}")
    return profiles


def profile_for(key: str, ingest_prefix: str, profiles: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict]:
    """The longest profile folder that ``key`` lies under (relative to the ingest prefix), and its fields."""
    relative = key[len(ingest_prefix):] if key.startswith(ingest_prefix) else None
    if relative is None:
        return "", {}
    folder = max((f for f in profiles if relative.startswith(f)), key=len, default="")
    return folder, dict(profiles.get(folder, {}))


def metadata_fields(metadata: Mapping[str, str]) -> dict[str, str]:
    """``reelforge-<field>`` user metadata (S3 lower-cases the names) as form fields."""
    fields = {k[len(METADATA_PREFIX):].replace("-", "_"): v.strip() for k, v in metadata.items()
              if k.lower().startswith(METADATA_PREFIX)}
    return _checked(fields, "object metadata (x-amz-meta-reelforge-*)")


def upload_params(params: Mapping[str, Any], conf: Mapping[str, Any] | None, *, key: str, ingest_prefix: str,
                  metadata: Mapping[str, str], profiles: Mapping[str, Mapping[str, Any]]) -> tuple[dict, dict]:
    """The run's form fields with the upload's settings applied, and where each applied field came from."""
    explicit = set(conf or {})
    folder, profile = profile_for(key, ingest_prefix, profiles)
    meta = metadata_fields(metadata)
    merged, origin = dict(params), {}
    for source, fields in ((f"profile {folder!r}", profile), ("object metadata", meta)):
        for name, value in fields.items():
            if name not in explicit:
                merged[name], origin[name] = value, source
    return merged, origin
