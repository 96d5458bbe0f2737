"""Where models and datasets come from: a local path, or the Hugging Face Hub, checked before anything loads.

Without these checks a machine with no network waits through the hub client's retries and then prints a traceback;
with them, an unreachable hub is one line that says what to do.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import PipelineError


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_is_reachable() -> bool:
    """Whether a TCP connection to the Hugging Face Hub opens (through the proxy that HTTPS_PROXY, HTTP_PROXY or
    ALL_PROXY names for it, unless NO_PROXY exempts it, as huggingface_hub itself would connect); fails fast on a
    machine without network."""
    if _hub_offline_mode():
        return False
    return _can_connect(hub_connection_target(hub_endpoint()))


def hub_connection_target(endpoint: str) -> str:
    """Where a connection to `endpoint` goes: the proxy the environment names for its scheme (urllib's reading of
    HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY, in either case), else the endpoint itself."""
    from urllib.request import getproxies, proxy_bypass

    url = urlparse(endpoint)
    proxies = getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not proxy_bypass(url.hostname or ""):
        return proxy if "://" in proxy else f"http://{proxy}"
    return endpoint


def _hub_offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=8)
def _can_connect(endpoint: str, timeout_s: float = 5.0) -> bool:
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                      timeout=timeout_s):
            return True
    except OSError:
        return False


def require_source(name_or_path: str | None, what: str, field_name: str) -> str:
    """Check that a model or dataset can be loaded: a local path that exists, or a hub id with the hub reachable.

    Without this, a machine with no network waits through the hub client's retries and then prints a traceback.
    """
    if not name_or_path:
        raise PipelineError(f"{field_name} is not set: give the {what} as a local path or a Hugging Face Hub id")
    if Path(name_or_path).exists():
        return name_or_path
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        raise PipelineError(f"{field_name}: {what} path '{name_or_path}' does not exist")
    if _hub_offline_mode():
        return name_or_path  # the libraries will look in the local cache only
    if not hub_is_reachable():
        raise PipelineError(
            f"{field_name}: cannot reach the Hugging Face Hub ({hub_endpoint()}) to load the {what} "
            f"'{name_or_path}', and no local folder has that name; connect to the internet, set HF_HUB_OFFLINE=1 "
            "to use a copy in the local cache, or run the embedded offline default (make demo)"
        )
    return name_or_path
