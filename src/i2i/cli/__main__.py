"""`python -m i2i.cli` is `i2i` (torchrun uses it: `torchrun ... -m i2i.cli train ...`)."""

from i2i.cli.main import main

raise SystemExit(main())
