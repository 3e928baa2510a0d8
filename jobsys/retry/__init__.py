"""Retry pipeline: retry rules, retry_state, manual/bulk/automatic retry, and pipelines."""
