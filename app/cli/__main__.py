"""`python -m app.cli` = the `tickcast` command."""

from app.cli import main

raise SystemExit(main())
