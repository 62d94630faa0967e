"""`python -m farmd.cli`, as `farmd` (and `python -m farmd`)."""

from farmd.cli import main

raise SystemExit(main())
