"""`python -m i2i.serving` is `i2i-serve`."""

from i2i.serving.server import main

raise SystemExit(main())
