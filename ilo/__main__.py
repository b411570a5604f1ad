from ilo.engine.cli import main

raise SystemExit(main())
