"""API keys and tenants.

A key is ``ll_`` plus 43 random URL-safe characters; only its sha256 is
stored (the key has 256 bits of entropy, so a fast hash is enough). Every
route but health, metrics and docs takes the caller's tenant from
``Authorization: Bearer <key>``; everything a tenant makes is invisible to
the others (404, never 403). Without keys (``layerlens serve`` on loopback)
every caller is the tenant ``local``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from infra.db.models import LOCAL_TENANT, ApiKey, utcnow
from infra.db.session import transaction
from service.context import ServiceContext, context
from service.problems import Problem

KEY_PREFIX = "ll_"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    id: str
    tenant: str
    key: str  # shown once


def create_key(sessions: sessionmaker[Session], tenant: str, name: str = "") -> IssuedKey:
    if not TENANT_NAME.match(tenant):
        raise ValueError(f"tenant must be 1-64 of a-z, 0-9, '_' and '-', starting with a "
                         f"letter or digit; got '{tenant}'")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(tenant=tenant, name=name or tenant, key_sha256=key_sha256(key),
                 prefix=key[:10])
    with transaction(sessions) as session:
        session.add(row)
    return IssuedKey(row.id, tenant, key)


def revoke_key(sessions: sessionmaker[Session], key_id: str) -> bool:
    """True when a live key with this id (or key prefix) was revoked."""
    with transaction(sessions) as session:
        result = session.execute(
            update(ApiKey).where((ApiKey.id == key_id) | (ApiKey.prefix == key_id),
                                 ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    return result.rowcount > 0  # type: ignore[attr-defined]


def list_keys(sessions: sessionmaker[Session]) -> list[tuple[str, str, str, str, datetime | None]]:
    """(id, tenant, name, prefix, revoked_at) of every key."""
    with sessions() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at))
        return [(k.id, k.tenant, k.name, k.prefix, k.revoked_at) for k in rows]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="layerlens"'})


def _tenant_of(ctx: ServiceContext, key: str) -> str | None:
    with ctx.sessions() as session:
        return session.scalar(select(ApiKey.tenant).where(
            ApiKey.key_sha256 == key_sha256(key), ApiKey.revoked_at.is_(None)))


#: Declares the scheme in the OpenAPI document; ``caller_tenant`` answers the 401s itself.
bearer = HTTPBearer(auto_error=False, bearerFormat="ll_<43 characters>",
                    description="an API key (`layerlens keys create --tenant NAME` makes one); "
                                "not needed when the service runs with LAYERLENS_AUTH=off")


async def caller_tenant(
        ctx: Annotated[ServiceContext, Depends(context)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> str:
    """The tenant of the request's API key (401 without a valid one, when keys are required)."""
    if not ctx.settings.auth_required:
        return LOCAL_TENANT
    if credentials is None:
        raise _unauthorized("send an API key: Authorization: Bearer <key> "
                            "(`layerlens keys create --tenant NAME` makes one)")
    tenant = await run_in_threadpool(_tenant_of, ctx, credentials.credentials)
    if tenant is None:
        raise _unauthorized("unknown or revoked API key")
    return tenant


Tenant = Annotated[str, Depends(caller_tenant)]
