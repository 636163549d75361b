"""Generated modules of the Open Inference Protocol (KServe v2), as Triton defines it.

`protos/i2i/oip/` vendors Triton's `grpc_service.proto` and `model_config.proto` (package
``inference``, BSD-3-Clause licence beside them). Do not edit the `*_pb2*` files: run
`make protos`; `tests/serving/test_protocol.py` fails when they are out of date.
"""
