"""ReelForge's Airflow side: hooks, operators, triggers and notifiers (importable by every component)."""
