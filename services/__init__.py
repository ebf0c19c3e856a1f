"""tensorgate serving: a KServe v2 gateway, Redis-stream queues and ONNX Runtime model services.

Where a request goes, in order:
  validated  -> services/validation.py          (against the model's config.pbtxt)
  queued     -> services/gateway/dispatcher.py  (XADD req:<model>, via services/queue/streams.py)
  batched    -> services/modelservice/worker.py (XREADGROUP + services/modelservice/batching.py)
  run        -> services/modelservice/runners/ (picked by the config: onnx.py, translator/)
  answered   -> services/modelservice/worker.py (XADD rep:<gateway> + XACK) -> gateway/dispatcher.py
"""

__version__ = "0.1.0"
