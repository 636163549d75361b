"""The command line: parses arguments, then calls the stages. Nothing imports this package.

One module per command group: `train` (train, data, eval, import), `export`, `models`
(list, show, build-engines), `serve` (the serving stage's own `i2i-serve`), `translate`,
`demo`; `common` holds what they share, `main` the `i2i` parser. Stages are imported inside
the commands, so `i2i translate --server` and `i2i serve` run without PyTorch.
"""

from i2i.cli.common import UsageError
from i2i.cli.export import export_main
from i2i.cli.main import build_parser, main
from i2i.cli.serve import serve_main
from i2i.cli.train import train_main

__all__ = ["UsageError", "build_parser", "export_main", "main", "serve_main", "train_main"]
