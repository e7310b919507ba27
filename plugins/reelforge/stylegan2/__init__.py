"""Airflow side of the StyleGAN2 workflows: settings, SageMaker request configs, task bodies, operators.

The model code lives in ``containers/stylegan2`` (run by SageMaker jobs, never imported here).
"""
