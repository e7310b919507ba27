"""Airflow side of the personalised-avatar workflow: settings, names, task bodies, endpoint lifecycle.

The model code (DreamBooth + LoRA fine-tuning, Triton serving) lives in ``containers/avatar`` and runs
on SageMaker; it is never imported here.
"""
