"""``hostname_callable`` for the Celery test: each worker process names itself from its environment."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("REELFORGE_TEST_HOSTNAME") or socket.getfqdn()
