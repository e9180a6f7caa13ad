"""etcdguard agent: verified etcd snapshots and node-local restores on one etcd node."""
