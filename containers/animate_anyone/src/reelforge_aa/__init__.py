"""ReelForge glue around Moore-AnimateAnyone training on Slurm (SageMaker HyperPod).

* :mod:`reelforge_aa.config` renders the stage configs from templates, run variables and overrides.
* :mod:`reelforge_aa.checkpoints` finds the newest *complete* checkpoint of a run and its weights.
* :mod:`reelforge_aa.tracking` finds or creates the MLflow run of a sweep run (same run on resume).
* :mod:`reelforge_aa.launch` is what ``srun`` starts on every node: resume, render, exec the launcher.
* :mod:`reelforge_aa.export` uploads the chosen weights to S3 with a manifest.
"""

__version__ = "0.1.0"
