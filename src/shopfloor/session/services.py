"""What clients of Shopfloor's hub services (apps, workshops) share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlparse, urlunparse

T = TypeVar("T")


class ServiceError(RuntimeError):
    """A service refused or failed a request; ``problems`` maps field → message."""

    def __init__(self, message: str, problems: Mapping[str, str] | None = None,
                 status: int = 0) -> None:
        self.problems = dict(problems or {})
        self.status = status
        super().__init__(message)


def service_url_beside(api_url: str, port: int, path: str) -> str:
    """The URL of a service on ``port`` of the hub API's host, at ``path``."""
    url = urlparse(api_url)
    return urlunparse(url._replace(netloc=f"{url.hostname}:{port}", path=path))


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from blocking code, also inside a running event loop
    (a Jupyter kernel has one): then it runs on its own loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
