"""Every Redis key name tensorgate uses, in one place."""

GROUP = "runners"  # the consumer group of every request stream


def request_stream(model: str) -> str:
    """Work for one model; all its replicas read it through GROUP."""
    return f"req:{model}"


def reply_stream(gateway_id: str) -> str:
    """Replies for one gateway, which reads it alone."""
    return f"rep:{gateway_id}"


def dead_letter_stream(model: str) -> str:
    """Entries delivered too often without an ACK (a poison request or crashing replicas)."""
    return f"dlq:{model}"


def replicas(model: str) -> str:
    """Sorted set: replica consumer name -> unix time of its last heartbeat."""
    return f"replicas:{model}"


def alive(model: str) -> str:
    """Sorted set: replica consumer name -> unix time of its last heartbeat, kept while it drains
    (`replicas` drops it when it stops taking work): silence here means the replica died."""
    return f"alive:{model}"


def statistics(model: str, version: str) -> str:
    """Hash of counters and nanosecond totals behind ModelStatistics of one model version, shared
    by all processes."""
    return f"stats:{model}:{version}"


MODELS = "models"
"""Sorted set: model name -> unix time of the last heartbeat of any of its replicas (the live
catalogue the gateways serve from)."""


def serving(model: str) -> str:
    """Hash: replica consumer name -> JSON of what it serves ({version: state and reason})."""
    return f"serving:{model}"


def configs(model: str) -> str:
    """Hash: version -> serialized inference.ModelConfig, as the replicas loaded it."""
    return f"config:{model}"


def control(model: str) -> str:
    """Pub/sub channel: repository commands (load, unload) for every replica of a model."""
    return f"control:{model}"
