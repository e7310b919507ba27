"""Notifications: SNS messages for deadlines (task/DAG failures use the provider's SnsNotifier)."""
