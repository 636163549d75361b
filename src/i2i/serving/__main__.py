"""`python -m i2i.serving` is `i2i-serve` (an entry point, like the console script)."""

from i2i.serving.command import main

raise SystemExit(main())
