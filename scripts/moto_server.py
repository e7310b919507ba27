"""moto's server, the local stand-in for AWS, with S3's conditional object writes made atomic.

Real S3 decides ``If-None-Match: *`` and ``If-Match`` on a PUT atomically: of two writers racing for one
key, one wins and the other gets 412 (or 409). moto 5.2 checks the condition, then writes, with no lock,
on a threaded server, so two racing writers can both win. The one-run-per-job claims
(``reelforge.sr.claims``) rely on S3's behaviour; under load the local stack saw two runs claim the same
job. Serializing moto's object PUTs makes the double behave as the service does. Only the local stack
starts this; arguments are moto_server's own (``-H``, ``-p``).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from moto import server
from moto.s3.responses import S3Response

_OBJECT_WRITES = threading.Lock()
_put_object = S3Response.put_object


def _atomic_put_object(self: S3Response) -> Any:
    """One object PUT at a time: a conditional write's check and its write cannot interleave with another's."""
    with _OBJECT_WRITES:
        return _put_object(self)


S3Response.put_object = _atomic_put_object  # type: ignore[method-assign]

if __name__ == "__main__":
    server.main(sys.argv[1:])
