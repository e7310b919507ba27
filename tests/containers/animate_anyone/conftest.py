"""Import the glue package from the source tree (it is installed only in the cluster venv/image)."""

from __future__ import annotations

import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[3] / "containers" / "animate_anyone"
if str(PKG / "src") not in sys.path:
    sys.path.insert(0, str(PKG / "src"))
