"""How etcd and kube-apiserver are stopped and started on this node."""
