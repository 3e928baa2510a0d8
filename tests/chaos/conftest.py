"""The fault harness (``make chaos``): real worker processes, a throwaway PostgreSQL
server, a TCP proxy (``tests/integration/chaos_proxy.py``) and the effect ledger
(``chaos_tasks.py``). Not part of ``make test``; each scenario prints its figures."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "integration"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
