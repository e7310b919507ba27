"""AnimateAnyone training on SageMaker HyperPod (Slurm): the Airflow side of ``animate_anyone_training``."""
