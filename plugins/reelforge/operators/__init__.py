"""ReelForge operators (:mod:`reelforge.operators.slurm`)."""
