"""Lanes and workers: the queue topology run as supervised, systemd-ready processes."""
