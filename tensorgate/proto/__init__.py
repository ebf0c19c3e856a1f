"""Generated protobuf/gRPC code (make protos). Do not edit the *_pb2 files."""
