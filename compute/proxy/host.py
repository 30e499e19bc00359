"""The host services one sandboxed call gets (compute.sandbox's HostServices protocol).

Apart from the service because this is where a call's identity meets the proxy: every secret,
placeholder and allow-list check is made here for the worker id, function and deployer the
compute service vouched for, and the proxy's errors become the Python exceptions the sandbox
hands to the function (with substituted secret values redacted).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from compute.sandbox.limits import check_owner
from mesh.errors import InvalidArgumentError, MeshError, NotFoundError, PermissionDeniedError

from .http import Request, redact

if TYPE_CHECKING:
    from .service import ProxyService

# {{secret:NAME}} or {{secret:NAME@OWNER}} (the owner as get_secret's ``owner``)
PLACEHOLDER = re.compile(r"\{\{\s*secret:([A-Za-z0-9_.-]{1,64})(?:@([0-9A-Fa-f]+))?\s*\}\}")


class WorkerHost:
    """HostServices for one call of ``function`` in ``worker_id`` (compute.sandbox protocol)."""

    def __init__(self, proxy: ProxyService, worker_id: str, function: str,
                 deployer: bytes | None = None) -> None:
        self.proxy = proxy
        self.worker_id = worker_id
        self.function = function
        self.deployer = deployer

    @property
    def principal(self) -> str:
        return f"{self.worker_id}/{self.function}"

    async def get_secret(self, name: str, owner: str | None = None) -> str:
        try:
            return await self.proxy.secrets.get(name, self.worker_id, self.function,
                                                self.deployer, owner)
        except PermissionDeniedError as exc:
            raise PermissionError(str(exc)) from None
        except InvalidArgumentError as exc:
            raise ValueError(str(exc)) from None

    async def call_external_api(self, url: str, method: str, headers: dict[str, str] | None,
                                body: str | bytes | None, timeout: float) -> dict[str, Any]:
        secrets: list[str] = []
        secret_headers: set[str] = set()
        clear: dict[str, str] = {}
        sealed_to: frozenset[bytes] | None = None
        try:
            values: dict[tuple[str, str], str] = {}
            for key, value in (headers or {}).items():
                refs: list[tuple[str, str]] = PLACEHOLDER.findall(value)
                for name, owner in refs:
                    if (name, owner) not in values:
                        values[name, owner], nodes = await self.proxy.secrets.read(
                            name, self.worker_id, self.function, self.deployer,
                            check_owner(owner or None))
                        secrets.append(values[name, owner])
                        sealed_to = nodes if sealed_to is None else sealed_to & nodes
                if refs:
                    secret_headers.add(key.lower())
                    value = PLACEHOLDER.sub(lambda m: values[m.group(1), m.group(2) or ""],
                                            value)
                if "\r" in value or "\n" in value:
                    raise InvalidArgumentError(f"header {key[:40]!r} contains a line break")
                clear[key] = value
            policy = self.proxy.policy
            req = Request(url=url, method=method, headers=clear,
                          body=body.encode() if isinstance(body, str) else body,
                          timeout=float(timeout),
                          allowed_hosts=policy.hosts_for(self.worker_id, self.function),
                          max_bytes=policy.max_response_bytes, secret_headers=secret_headers,
                          secrets=secrets, peers=sealed_to)
            if not req.allowed_hosts:
                raise PermissionDeniedError("this function may not call external APIs "
                                            "(no --http-allow entry for it)")
            response = await self.proxy.fetch(req, self.principal)
            return response.to_sandbox(secrets)
        except PermissionDeniedError as exc:
            raise PermissionError(redact(str(exc), secrets)) from None
        except MeshError as exc:
            raise RuntimeError(redact(str(exc), secrets)) from None

    async def resolve(self, domain: str, record_type: str) -> list[dict[str, Any]]:
        try:
            answer = await self.proxy.resolve(domain, record_type, self.principal)
        except PermissionDeniedError as exc:
            raise PermissionError(str(exc)) from None
        except NotFoundError:
            return []
        except MeshError as exc:
            raise RuntimeError(str(exc)) from None
        return [r.to_dict() for r in answer.records]
