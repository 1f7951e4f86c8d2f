"""`python -m scheduler` is the same program as the `flavor-scheduler` console script."""

from scheduler.cli import main

raise SystemExit(main())
