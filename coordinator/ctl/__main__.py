"""`python -m etcdguard.coordinator.ctl` runs etcdguardctl."""

import sys

from etcdguard.coordinator.ctl.main import main

sys.exit(main())
