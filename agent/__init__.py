"""etcdguard agent: verified etcd snapshots and node-local restores on one etcd node."""

__version__ = "0.1.0"
