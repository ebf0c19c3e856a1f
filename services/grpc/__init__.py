"""The KServe v2 gRPC layer shared by the gateway and the model services."""
