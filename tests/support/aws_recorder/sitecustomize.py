"""Loaded at start-up by every Python process with this directory on ``PYTHONPATH`` (tests only).

Installs the AWS call recorder (``reelforge_aws_recorder``) when ``REELFORGE_AWS_CALL_LOG`` is set.
"""

import os

if os.environ.get("REELFORGE_AWS_CALL_LOG"):
    try:
        import reelforge_aws_recorder

        reelforge_aws_recorder.install()
    except Exception:  # noqa: BLE001, S110 - a broken recorder must not break the process under test
        pass
