"""Recurring schedule (cron entries) and batched fan-out."""
