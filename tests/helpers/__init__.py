"""Helpers shared by etcdguard's tests: real etcd processes, TLS material, ports."""
