"""Airflow-side logic of the video super-resolution workflow (no video work happens here)."""
