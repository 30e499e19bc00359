"""Who a local-API call acts for: the principal its bearer token stands for.

The local API's interceptor (taskworker/api_auth.py) sets :data:`API_USER` around each call's
handler: ``None`` for the node's own (admin) token, which may act as any keyring user as
before, or the keyring user a *user token* belongs to. Code that turns a request's ``user_id``
into a key asks :func:`acting_user` (storage.keyring.Keyring.user does, so every storage and
versions handler is covered): a user token acts only as its own user, and an empty
``user_id`` means that user rather than ``default``. Outside a local-API call (background
repair, sync, peer handlers) the variable is ``None`` and nothing changes.

It lives in ``mesh`` so that storage can read it and taskworker set it, with imports still
running downwards.
"""

from __future__ import annotations

from contextvars import ContextVar

from mesh.errors import PermissionDeniedError

API_USER: ContextVar[str | None] = ContextVar("tw_mesh_api_user", default=None)


def acting_user(user_id: str) -> str:
    """The keyring user a request's ``user_id`` may act as in this context.

    With no user principal: ``user_id`` unchanged (empty still means the default user).
    With one: empty or equal to it gives the principal; any other name is PermissionDeniedError.
    """
    principal = API_USER.get()
    if principal is None or user_id == principal:
        return user_id if principal is None else principal
    if not user_id:
        return principal
    shown = user_id if user_id.isprintable() and len(user_id) <= 64 else repr(user_id[:64])
    raise PermissionDeniedError(f"this token belongs to {principal}; it cannot act as "
                                f"{shown} (leave user_id empty to act as {principal})")
