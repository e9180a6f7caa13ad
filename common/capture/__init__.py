"""Continuous backup: the changes between snapshots, captured from etcd's watch API."""
