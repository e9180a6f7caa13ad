"""etcd's gRPC API, as both daemons talk to it: the client and the wire format it reads."""
