"""etcd's gRPC API, as both daemons talk to it: the client and the wire format it reads.

gRPC's fork support is switched off here, before any module of this package imports grpc: both
daemons fork only to exec (etcdutl, etcd, kube-apiserver stand-ins, with a preexec function for
PR_SET_PDEATHSIG and priorities), and with fork support on, grpcio 1.80 and later restart their poller
in the forked child, which then aborts on a closed epoll descriptor before it can exec (grpc/grpc#43055:
a prepare failed with "etcdutl snapshot restore failed (exit -6) ... epoll_wait error: Bad file
descriptor"). An operator's explicit setting is kept.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
