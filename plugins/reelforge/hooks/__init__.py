"""ReelForge hooks (Slurm over SSH: :mod:`reelforge.hooks.slurm`)."""
