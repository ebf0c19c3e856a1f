"""Process settings, read once from the environment (pydantic-settings) and passed in.

Every field can be set as an environment variable: the prefix plus the field name in
capitals, e.g. ``TENSORGATE_GATEWAY_GRPC_PORT=9001``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ServerSettings(BaseSettings):
    """What every server process (gateway, model service) is configured with alike."""

    host: str = Field("0.0.0.0", description="Interface the gRPC server binds to.")
    redis_url: str = Field("redis://localhost:6379/0", description="Redis holding the request and reply streams.")
    max_message_mb: int = Field(64, description="Largest gRPC message accepted or sent, in MiB.")
    max_concurrent_rpcs: int = Field(
        0, description="Calls served at once by the gRPC server; past it new calls get RESOURCE_EXHAUSTED (0: no limit)."
    )
    tls_cert_file: str = Field("", description="PEM certificate chain: with tls_key_file, the gRPC port speaks TLS only.")
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file.")
    tls_client_ca_file: str = Field(
        "", description="PEM roots for client certificates: set, every client must present one (mutual TLS)."
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "asyncio", description="Event loop: asyncio's own, or uvloop's (pip install uvloop; auto: uvloop when installed). "
        "Measured no gain here (docs/benchmarks.md)."
    )


class GatewaySettings(ServerSettings):
    """Settings of the public gateway process."""

    model_config = SettingsConfigDict(env_prefix="TENSORGATE_GATEWAY_", protected_namespaces=())

    grpc_port: int = Field(8001, description="KServe v2 gRPC port (Triton's convention: 8001).")
    metrics_port: int = Field(8002, description="Prometheus /metrics port; 0 disables it.")
    model_repository: Path | None = Field(
        Path("models"), description="Optional Triton-layout repository: its models are listed (UNAVAILABLE) before a "
        "replica serves them. The gateway serves every model a live replica announces, with or without it."
    )
    command_timeout_s: float = Field(
        120.0, description="How long RepositoryModelLoad / Unload wait for every replica of the model to answer."
    )
    gateway_id: str = Field(default_factory=_default_instance_id, description="Names this gateway's reply stream rep:<gateway_id>.")
    default_timeout_s: float = Field(
        30.0, description="Deadline for a request that sets none and whose model config sets no default timeout."
    )
    max_timeout_s: float = Field(
        300.0, description="Longest a request may wait, whatever its timeout parameter, gRPC deadline or model default."
    )
    redis_timeout_s: float = Field(5.0, description="Timeout of every Redis command the gateway sends.")
    replica_ttl_s: float = Field(5.0, description="A model replica whose last heartbeat is older than this is not counted as ready.")
    reply_stream_maxlen: int = Field(100_000, description="Approximate cap of this gateway's reply stream (replies are read once).")
    grace_s: float = Field(10.0, description="On shutdown, time given to in-flight requests to finish.")
    api_keys: list[str] = Field(
        default_factory=list,
        description="When set (JSON list), inference RPCs need metadata 'authorization: Bearer <key>'; "
        "health and reflection stay open.",
    )


class ModelServiceSettings(ServerSettings):
    """Settings of one model service process (one model, one replica)."""

    model_config = SettingsConfigDict(env_prefix="TENSORGATE_MODEL_", protected_namespaces=())

    name: str = Field("mnist_mlp", description="Model to serve: a folder of the model repository.")
    version: str = Field(
        "", description="Pin one version folder; empty serves the versions the config's version_policy selects "
        "(default: the newest)."
    )
    model_repository: Path = Field(Path("models"), description="Triton-layout model repository.")
    repository_poll_s: float = Field(
        0.0, description="Triton's POLL mode: look at the model's folder this often and load, switch to or retire "
        "versions as its config and version_policy say (0: only at start and on RepositoryModelLoad)."
    )
    grpc_port: int = Field(8101, description="Direct gRPC port (health, metadata, direct ModelInfer).")
    metrics_port: int = Field(9101, description="Prometheus /metrics port; 0 disables it.")
    consumer: str = Field(default_factory=_default_instance_id, description="Consumer name of this replica in the group.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDAExecutionProvider when ONNX Runtime offers it, else CPU."
    )
    intra_op_threads: int = Field(
        0, description="ONNX Runtime intra-op threads per session (0: half the cores this process may use, 1 to 8)."
    )
    inter_op_threads: int = Field(1, description="ONNX Runtime inter-op threads.")
    ort_spinning: bool = Field(
        False, description="Let ONNX Runtime's pool threads busy-wait between calls (lower latency on a machine "
        "the model service has to itself; burns a core otherwise)."
    )
    inline_batch_max_us: int = Field(
        200, ge=0, description="A batch whose model has lately cost less than this (per row, times its rows) runs "
        "on the event loop instead of an executor thread, whose hand-off costs more than such a call "
        "(one model instance, tensor inputs only; 0: always a thread). A lone request that is all its gateway has "
        "in flight may run so up to 2,000 us (nothing can arrive meanwhile)."
    )
    max_image_bytes: int = Field(
        10_000_000, gt=0, description="Largest encoded image (image_bytes of the classifiers), in bytes."
    )
    max_image_pixels: int = Field(
        40_000_000, gt=0, le=64_000_000,
        description="Largest image (width x height, read from its header before decoding) the classifiers "
        "decode; guards against decompression bombs. At most Pillow's ceiling set in tensorgate.digits.",
    )
    redis_timeout_s: float = Field(5.0, description="Timeout of every non-blocking Redis command.")
    idle_block_ms: int = Field(1000, description="How long one XREADGROUP waits for work when the queue is empty.")
    claim_idle_ms: int = Field(
        30_000, description="Entries pending this long on any replica are taken over (XAUTOCLAIM), heartbeat or not."
    )
    claim_interval_s: float = Field(0.5, description="How often to look for entries of dead replicas.")
    replica_dead_s: float = Field(
        1.5, description="A replica silent this long (no heartbeat, also while draining) is dead: its pending entries "
        "are taken over at once."
    )
    takeover_idle_ms: int = Field(
        1000, description="An entry of a dead replica is taken only once idle this long, so two live replicas never "
        "take it from each other in turn."
    )
    max_deliveries: int = Field(3, description="An entry delivered this many times without an ACK goes to the dead-letter stream.")
    heartbeat_s: float = Field(
        0.5, description="Interval of the replica heartbeat (the gateway reads it for ModelReady; replicas for liveness)."
    )
    drain_s: float = Field(
        1.5,
        description="On shutdown, how long the replica still takes work after leaving the replica set "
        "(longer than the gateway's 0.5 s readiness cache).",
    )
    grace_s: float = Field(10.0, description="On shutdown, time given to the batch in flight and direct requests.")
