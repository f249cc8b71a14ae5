"""`python -m harness.cluster up|down [STATE_DIR]` (make cluster, make cluster-down)."""

from harness.cluster import main

raise SystemExit(main())
