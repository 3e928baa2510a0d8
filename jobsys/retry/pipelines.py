"""Moved to :mod:`jobsys.pipelines.definitions` (pipelines are their own domain); this
name stays so application code written against the old path keeps importing."""

from jobsys.pipelines.definitions import Step, pipeline, registry, step

__all__ = ["Step", "pipeline", "registry", "step"]
