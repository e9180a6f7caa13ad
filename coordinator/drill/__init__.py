"""Restore drills: a vault snapshot restored into a scratch etcd on the coordinator host, proven, removed.

``checks.py`` judges what a restored store answered against what was
recorded when the snapshot was taken (pure); ``run.py`` makes the scratch
etcd, asks it, and proves everything scratch is gone afterwards;
``records.py`` keeps each entry's last drill in the coordinator's state;
``policy.py`` decides what to drill and when (pure); ``service.py`` runs the
schedule and ``etcdguardctl drill`` in the daemon.
"""
