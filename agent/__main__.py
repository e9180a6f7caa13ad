"""`python -m etcdguard.agent` runs the agent CLI."""

import sys

from etcdguard.agent.cli import main

sys.exit(main())
