"""Moved to :mod:`jobsys.pipelines.store` (pipelines are their own domain); this name
stays so application code written against the old path keeps importing."""

from jobsys.pipelines.store import start_pipeline

__all__ = ["start_pipeline"]
