"""What a sandboxed function's HTTP call carries in and out: the request (with the secrets to
keep out of every answer) and the response handed back to the sandbox, redacted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return text


@dataclass
class Request:
    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float = 10.0
    allowed_hosts: list[str] = field(default_factory=list)
    max_bytes: int = 2**20
    secret_headers: set[str] = field(default_factory=set)   # lower-case names
    secrets: list[str] = field(default_factory=list)         # values to redact
    # --proxy-via-peers: the only peers that may carry it (those its header secrets are sealed
    # to, when it has any; None: any serving peer)
    peers: frozenset[bytes] | None = None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str

    def to_sandbox(self, secrets: list[str]) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for k, v in self.headers:
            headers[k.lower()] = redact(v, secrets)
        out: dict[str, Any] = {"status": self.status, "headers": headers,
                               "url": redact(self.url, secrets)}
        try:
            out["body"] = redact(self.body.decode("utf-8"), secrets)
        except UnicodeDecodeError:
            import base64

            out["body_b64"] = base64.b64encode(self.body).decode()
        return out
