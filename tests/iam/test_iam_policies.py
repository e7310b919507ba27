"""Every IAM policy in include/iam allows exactly the AWS calls its principal was seen to make, resource-scoped.

The record (``include/iam/operations.json``) lists, per policy, the IAM actions and example resources of
the calls the tests recorded (``python tests/iam/record_operations.py``; how a call is attributed to a
policy: ``tests/iam/calls.py``), and, with a reason, the actions a policy allows that no test can record
(production-only calls). ``include/iam/action-resources.json`` says, per action, which resource types
AWS's Service Authorization Reference lists for it. Checked here, from committed files only (fast tier):

(a) a policy allows every recorded action on every recorded resource;
(b) a policy allows nothing, action or resource, that is neither recorded nor listed with a reason;
(c) an action that supports resource-level permissions is never granted on ``"*"``, one that does not is
    granted on ``"*"`` (anything narrower never matches), and each grant names an ARN of a type the action takes.

The session check in ``tests/iam/recording.py`` closes the loop: a recorded run fails when a DAG makes a
call this record does not list.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from tests.iam.calls import PREFIX_MARK

ROOT = Path(__file__).resolve().parents[2]
IAM = ROOT / "include" / "iam"
POLICIES = sorted(IAM.glob("*-policy.json"))
RECORD = json.loads((IAM / "operations.json").read_text())
TABLE = json.loads((IAM / "action-resources.json").read_text())


def _list(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def statements(policy: Path) -> list[dict]:
    return json.loads(policy.read_text())["Statement"]


def allowed(policy: Path) -> dict[str, list[tuple[str, dict]]]:
    """IAM action → every (resource pattern, condition) an Allow statement grants it on."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for st in statements(policy):
        if st.get("Effect") == "Allow":
            for action in _list(st["Action"]):
                out.setdefault(action, []).extend((r, st.get("Condition", {})) for r in _list(st["Resource"]))
    return out


def prefix_allowed(condition: dict, prefix: str | None) -> bool:
    """The statement's ``s3:prefix`` condition against a request's prefix (``None``: the request has none,
    as HeadBucket or an unprefixed ListObjects; then a condition on the key does not hold)."""
    for operator, keys in condition.items():
        if "s3:prefix" not in keys:
            continue
        if prefix is None:
            return operator.endswith("IfExists") or (operator == "Null" and str(keys["s3:prefix"]) == "true")
        values = _list(keys["s3:prefix"])
        if operator.startswith("StringLike") and not any(fnmatch.fnmatchcase(prefix, v) for v in values):
            return False
        if operator.startswith("StringEquals") and prefix not in values:
            return False
        if operator == "Null":
            return str(keys["s3:prefix"]) == "false"
    return True


def arn_matches(grant: tuple[str, dict], arn: str) -> bool:
    """``arn`` "*": the call names no resource the record can turn into an ARN; any grant covers it."""
    pattern, condition = grant
    if arn == "*":
        return True
    arn, marked, prefix = arn.partition(PREFIX_MARK)
    if not marked and arn.endswith(PREFIX_MARK[:-1] + " absent"):
        arn, marked, prefix = arn[: -len(PREFIX_MARK[:-1] + " absent")], "absent", None
    return fnmatch.fnmatchcase(arn, pattern) and (not marked or prefix_allowed(condition, prefix))


def problems(policy: Path) -> list[str]:
    """Everything wrong with one policy against the record and the resource table (empty: fine)."""
    name = policy.name
    section = RECORD["policies"].get(name)
    if section is None:
        return [f"{name}: not in include/iam/operations.json (record its calls or list why none can be)"]
    recorded, unrecorded = section.get("recorded", {}), section.get("unrecorded", {})
    grants = allowed(policy)
    out = []
    for action, entry in recorded.items():  # (a)
        if action not in grants:
            out.append(f"{name}: lacks {action}, which {', '.join(entry['by'][:3])} called "
                       f"(e.g. on {entry['resources'][0]})")
            continue
        for arn in entry["resources"]:
            if not any(arn_matches(p, arn) for p in grants[action]):
                out.append(f"{name}: allows {action} on {[g[0] for g in grants[action]]}, not on {arn} (called by "
                           f"{', '.join(entry['by'][:3])})")
    for action in grants:  # (b)
        if action not in recorded and not str(unrecorded.get(action, "")).strip():
            out.append(f"{name}: allows {action}, which no test recorded and no reason in operations.json explains")
            continue
        if action not in recorded:
            continue
        types = TABLE["actions"].get(action) or []
        for grant in grants[action]:  # (b) per resource: every granted resource was used, or a reason says why
            if grant[0] != "*" and not any(re.match(TABLE["resource_types"][t], grant[0]) for t in types):
                continue  # a resource of a type this action does not take (another action's, same statement)
            examples = recorded[action]["resources"]
            used = grant[0] == "*" or "*" in examples or any(arn_matches(grant, arn) for arn in examples)
            if not used and not str(unrecorded.get(f"{action} {grant[0]}", "")).strip():
                out.append(f"{name}: allows {action} on {grant[0]}, which no recorded call touched and no reason "
                           f"in operations.json (key \"{action} {grant[0]}\") explains")
    for st in statements(policy):  # (c)
        if set(st) & {"NotAction", "NotResource"} or st.get("Effect") != "Allow":
            out.append(f"{name} {st.get('Sid')}: only Allow statements with Action and Resource are checked")
            continue
        resources = _list(st["Resource"])
        for action in _list(st["Action"]):
            if "*" in action:
                out.append(f"{name} {st.get('Sid')}: wildcard action {action}: name each action")
                continue
            if action not in TABLE["actions"]:
                out.append(f"{name}: {action} missing from include/iam/action-resources.json (look it up)")
                continue
            types = TABLE["actions"][action]
            if not types:
                if resources != ["*"]:
                    out.append(f"{name} {st.get('Sid')}: {action} takes no resource-level permission: "
                               f"grant it on \"*\" alone (AWS never matches {resources})")
                continue
            if "*" in resources:
                out.append(f"{name} {st.get('Sid')}: {action} can be scoped to {types} but is granted on \"*\"")
            if not any(re.match(TABLE["resource_types"][t], r) for t in types for r in resources):
                out.append(f"{name} {st.get('Sid')}: {action} takes {types}; none of {resources} is one")
    return out


def test_every_policy_and_every_record_entry_belong_together():
    assert POLICIES, "no policies in include/iam"
    names = {p.name for p in POLICIES}
    assert set(RECORD["policies"]) == names, set(RECORD["policies"]) ^ names
    for name, section in RECORD["policies"].items():
        assert section.get("principal", "").strip(), f"{name}: say which principal the policy is for"
        for key in [*section.get("recorded", {}), *section.get("unrecorded", {})]:
            action = key.split(" ", 1)[0]  # an unrecorded key is an action, or "action resource-pattern"
            assert action in TABLE["actions"], f"{name}: {action} missing from action-resources.json"


@pytest.mark.parametrize("policy", POLICIES, ids=[p.stem for p in POLICIES])
def test_policy_allows_exactly_the_recorded_calls_resource_scoped(policy):
    found = problems(policy)
    assert not found, "\n".join(found)


def test_the_check_catches_a_missing_action_a_stray_one_and_a_star(tmp_path, monkeypatch):
    """The check is not vacuous: a copy of a policy with a recorded action dropped, an extra action and a
    scoped action on "*" fails with each of the three reasons."""
    name = "stylegan2-airflow-policy.json"
    doc = json.loads((IAM / name).read_text())
    recorded = sorted(RECORD["policies"][name]["recorded"])
    victim = next(a for a in recorded if a.startswith("sagemaker:List"))
    for st in doc["Statement"]:
        st["Action"] = [a for a in _list(st["Action"]) if a != victim]
    doc["Statement"] = [st for st in doc["Statement"] if st["Action"]]
    doc["Statement"].append({"Sid": "Stray", "Effect": "Allow", "Action": ["sqs:ListQueues", "sns:Publish"],
                             "Resource": "*"})
    copy = tmp_path / name
    copy.write_text(json.dumps(doc))
    found = "\n".join(problems(copy))
    assert f"lacks {victim}" in found
    assert "allows sqs:ListQueues, which no test recorded" in found
    assert "sns:Publish can be scoped to ['sns:topic'] but is granted on \"*\"" in found
