"""The steps of etcdguard's operations, one module each (see common/ops/step.py and flows.py)."""
