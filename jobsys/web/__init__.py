"""The web operator console (``jobsys web``): an edge like ``jobsys.cli``.

Pages and actions call the same service functions as the CLI commands; live updates
come from one LISTEN per process (:mod:`jobsys.web.live`).
"""
