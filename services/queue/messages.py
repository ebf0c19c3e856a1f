"""The fields of stream entries: a request (gateway -> model service) and a reply (back).

The tensors travel as a serialized KServe `ModelInferRequest` / `ModelInferResponse`, so the
queue needs no codec of its own.
"""

from __future__ import annotations

from dataclasses import dataclass


def _text(fields: dict[bytes, bytes], key: bytes) -> str:
    return fields[key].decode()


@dataclass(frozen=True)
class RequestEntry:
    request_id: str
    reply_to: str  # the gateway's reply stream
    deadline: float  # absolute unix time; past it the request is dropped
    enqueued: float  # unix time the gateway added it
    payload: bytes  # serialized ModelInferRequest
    # The gateway's requests for this model awaiting their replies when it added this one, itself
    # included (0: unknown). A batch holding that many of one gateway's requests holds all it had.
    inflight: int = 0

    def to_fields(self) -> dict[str, str | bytes]:
        return {
            "id": self.request_id,
            "reply_to": self.reply_to,
            "deadline": repr(self.deadline),
            "enqueued": repr(self.enqueued),
            "payload": self.payload,
            "inflight": str(self.inflight),
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> RequestEntry:
        """Raises KeyError or ValueError on a malformed entry."""
        return cls(
            request_id=_text(fields, b"id"),
            reply_to=_text(fields, b"reply_to"),
            deadline=float(fields[b"deadline"]),
            enqueued=float(fields[b"enqueued"]),
            payload=fields[b"payload"],
            inflight=int(fields.get(b"inflight", b"0")),
        )


@dataclass(frozen=True)
class ReplyEntry:
    request_id: str
    code: int  # gRPC status code number; 0 = OK and payload holds the response
    message: str = ""
    payload: bytes = b""  # serialized ModelInferResponse
    version: str = ""  # the model version that answered (its statistics are counted under it)

    def to_fields(self) -> dict[str, str | bytes]:
        """Only what the gateway reads: a success carries no message, a failure no payload."""
        if self.code:
            return {"id": self.request_id, "code": str(self.code), "message": self.message}
        return {"id": self.request_id, "code": "0", "payload": self.payload, "version": self.version}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> ReplyEntry:
        return cls(
            request_id=_text(fields, b"id"),
            code=int(fields[b"code"]),
            message=fields.get(b"message", b"").decode(),
            payload=fields.get(b"payload", b""),
            version=fields.get(b"version", b"").decode(),
        )
