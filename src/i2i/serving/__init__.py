"""Stage 3: serve a model repository over gRPC (`i2i-serve`), with no PyTorch needed.

`command` is the `i2i-serve` command, `server` the gRPC server (`serve`, `run`), `config`
its settings, `store` the loaded models, `pipeline` and `images` the request path,
`batcher` the dynamic batcher, `backends` the runtimes, `metrics` the Prometheus
metrics, `local` translation without a server, `process` a server as a child process.
Nothing is imported here, so importing one module loads only what it needs.
"""
