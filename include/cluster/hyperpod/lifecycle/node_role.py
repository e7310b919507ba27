#!/usr/bin/env python3
"""Print shell assignments NODE_GROUP/NODE_ROLE for this node (controller, login or worker).

HyperPod writes /opt/ml/config/resource_config.json on every node: the instance groups and the
instances in each; this node is the one whose IP matches a local address.
Usage: node_role.py RESOURCE_CONFIG PROVISIONING_PARAMETERS
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys


def local_ips() -> set[str]:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout
    return set(out.split()) | {socket.gethostbyname(socket.gethostname())}


def main(resource_config: str, params_path: str) -> None:
    with open(resource_config) as fh:
        resources = json.load(fh)
    with open(params_path) as fh:
        params = json.load(fh)
    mine = local_ips()
    group = ""
    for g in resources.get("InstanceGroups", []):
        for inst in g.get("Instances", []):
            if inst.get("CustomerIpAddress") in mine:
                group = g.get("Name", "")
    if group == params.get("controller_group"):
        role = "controller"
    elif group == params.get("login_group"):
        role = "login"
    elif any(w.get("instance_group_name") == group for w in params.get("worker_groups", [])):
        role = "worker"
    else:
        raise SystemExit(f"this node's instance group {group!r} is not in the provisioning parameters")
    print(f"NODE_GROUP={shlex.quote(group)}")
    print(f"NODE_ROLE={shlex.quote(role)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
