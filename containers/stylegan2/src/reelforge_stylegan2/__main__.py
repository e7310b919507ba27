import sys

from reelforge_stylegan2.cli import main

sys.exit(main())
