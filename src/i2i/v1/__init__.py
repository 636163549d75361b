"""Generated protocol modules of contract 3 (`protos/i2i/v1/translator.proto`).

Do not edit `translator_pb2*.py*`: run `make protos` after changing the .proto file;
`tests/serving/test_protocol.py` fails when they are out of date.
"""
