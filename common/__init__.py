"""etcdguard's shared core: what the agent and the coordinator both stand on.

Base utilities, the wire protocol and typed reports, snapshot file checks, the
operation steps and their journal, the metrics server and check results. Neither
daemon imports the other; both import this (an import contract in `make lint`).
"""

__version__ = "0.1.0"
