"""Failure capture: every failed attempt of every job, with its context and kind."""
