"""Configuration: ``config/queues.yaml`` (topology, policies) and ``config/schedule.yaml``.

The only package that reads YAML. ``load()`` returns a frozen :class:`Config`.
"""

from jobsys.config.loader import BASE_LANE, Config, LaneSpec, display_path, load

__all__ = ["BASE_LANE", "Config", "LaneSpec", "display_path", "load"]
