"""ReelForge triggers (:mod:`reelforge.triggers.slurm`)."""
