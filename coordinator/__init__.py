"""etcdguard coordinator: the off-node snapshot vault and cluster-wide restores."""
