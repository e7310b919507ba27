"""``python -m reelforge_avatar``."""

import sys

from reelforge_avatar.cli import main

sys.exit(main())
