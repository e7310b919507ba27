import sys

from reelforge_aa.cli import main

sys.exit(main())
