from farmd.cli import main

raise SystemExit(main())
