"""Prometheus metrics of jobsys's state: :mod:`.exposition` collects and renders them,
:mod:`.service` for ``jobsys metrics``, :mod:`.endpoint` the worker's ``GET /metrics``.

A reader of every domain (jobs, failures, issues, schedule, flow): it sits beside them,
and no domain imports it.
"""
