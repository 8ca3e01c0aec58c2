"""The URL of a running server (``server.url``): a plain http(s) base URL, and whether its
host is this machine. Imports only the standard library."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_URL_PATH = re.compile(r"[A-Za-z0-9._~/%-]*")
_PORT = re.compile(r"[0-9]{1,5}")


def _host_problem(host: str, bracketed: bool) -> str | None:
    if bracketed:
        try:
            if "%" in host:  # a zone id names an interface of the machine that reads it
                raise ValueError(host)
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"[{host}] is not an IPv6 address"
        return None
    try:
        ipaddress.IPv4Address(host)
        return None
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(lb) for lb in labels) \
            or labels[-1].isdigit():
        return f"{host!r} is neither an IP address nor a host name"
    return None


def checked_server_url(url: str) -> str:
    """``url`` (its trailing '/' removed) if it is a plain http(s) base URL: a host, an
    optional port 1-65535 and path; no credentials, query or fragment. Else ValueError."""
    shown = repr(url)
    if not url.isascii() or not url.isprintable() or any(c in url for c in " \\"):
        raise ValueError(f"{shown} holds whitespace, a backslash or a non-ASCII character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. brackets around something that is no IPv6 address
        raise ValueError(f"{shown} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not url.lower().startswith(
            parts.scheme + "://"):
        raise ValueError(f"{shown} is not an http(s) URL (http://host:port)")
    if "@" in parts.netloc:
        raise ValueError(f"{shown} holds credentials (user:password@): they would be stored "
                         "in the DAG and every result")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"{shown} has a query or fragment: give the server's base URL")
    netloc = parts.netloc
    bracketed = netloc.startswith("[")
    host_part, sep, port = (netloc.rpartition(":") if not bracketed or "]:" in netloc
                            else (netloc, "", ""))
    if not sep:
        host_part, port = netloc, ""
    if bracketed:
        if not (host_part.startswith("[") and host_part.endswith("]")):
            raise ValueError(f"{shown}: malformed IPv6 host (write it as [::1])")
        host = host_part[1:-1]
    else:
        host = host_part
    if not host:
        raise ValueError(f"{shown} has no host")
    problem = _host_problem(host.lower(), bracketed)
    if problem:
        raise ValueError(f"{shown}: {problem}")
    if sep and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise ValueError(f"{shown}: port {port!r} is not a number from 1 to 65535")
    if not _URL_PATH.fullmatch(parts.path) or "/../" in parts.path + "/" \
            or "/./" in parts.path + "/":
        raise ValueError(f"{shown}: the path may hold only letters, digits and ._~-/ "
                         "without '.' or '..' segments")
    return url.rstrip("/")


def url_host(url: str) -> str:
    """The host of a URL that :func:`checked_server_url` accepted (brackets removed)."""
    return (urlsplit(url).hostname or "").lower()


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


