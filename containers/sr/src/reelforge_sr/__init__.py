"""ReelForge super-resolution worker (``reelforge-sr``): probe, plan, segment, assemble, fetch, deliver."""

__version__ = "0.1.0"
