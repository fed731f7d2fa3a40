from fastfp.cli.main import main

raise SystemExit(main())
