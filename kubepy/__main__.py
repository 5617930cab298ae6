from kubepy.cli import main

raise SystemExit(main())
