"""One model service process: a replica that consumes its model's stream and runs ONNX Runtime."""
