"""``python -m reelforge_sr`` is the same as the ``reelforge-sr`` command."""

import sys

from reelforge_sr.cli import main

sys.exit(main())
