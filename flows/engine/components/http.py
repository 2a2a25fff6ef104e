"""Components that call other services: any HTTP API, and OpenAI-compatible chat completions.

Outbound requests go through `guarded_session`, which refuses to connect to loopback,
private, link-local (cloud metadata) and other non-public addresses (an IPv6 address
that stands for an IPv4 one, such as NAT64 or 6to4, is judged as that IPv4 address), checked on the
address actually connected to (after DNS resolution, and again for every redirect),
unless the host is in the run's allow-list (`RunContext.http_allowed_hosts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import json
import socket
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
import aiohttp.abc

from flows.engine.components.core import _SafeFormatter
from flows.engine.components.data import as_text
from flows.engine.errors import NodeError, RetryableNodeError
from flows.engine.graph import is_variable_ref
from flows.engine.registry import Component, Input, Output, register

MAX_RESPONSE_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 5
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class BlockedAddressError(Exception):
    """The request would reach an address a flow may not reach (loopback, private network, metadata service)."""


class UnresolvableHostError(OSError):
    """No address for the host: the name resolves to nothing, or no resolver takes it."""


def _parse_allow_list(entries: tuple[str, ...] | list[str]) -> tuple[set[str], list]:
    names, networks = set(), []
    for entry in entries:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.add(entry)
    return names, networks


# IPv6 ranges whose addresses carry an IPv4 address in their last 32 bits and reach it: a NAT64
# gateway, or a host that takes IPv4-compatible addresses, connects to that IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use, never public
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _carried(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64, IPv4-compatible), else the address."""
    if ip.version == 4:
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.version == 6 and ip in _NAT64_LOCAL:
        return True
    ip = _carried(ip)
    return not ip.is_global or ip.is_multicast


def _allowed_by(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: list) -> bool:
    """Whether a CIDR of the allow-list covers the address, or the IPv4 address it stands for."""
    forms = {ip, _carried(ip)}
    return any(form in net for form in forms for net in networks if net.version == form.version)


def vet_host(host: str, port: int, allowed_hosts: tuple[str, ...] | list[str]) -> str:
    """The address to connect to for `host`, after checking every address it resolves to.

    Raises BlockedAddressError when one of them is not a public address and neither the
    host name nor a CIDR covering the address is in `allowed_hosts`. (Blocks while resolving:
    on an event loop, use `vet_host_async`.)
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHostError(f"Cannot resolve host {host!r}: {exc}") from exc
    return _vetted(host, infos, allowed_hosts)


async def vet_host_async(host: str, port: int, allowed_hosts: tuple[str, ...] | list[str]) -> str:
    """`vet_host` resolving with the event loop's getaddrinfo (in a thread), so the loop keeps running meanwhile."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnresolvableHostError(f"Cannot resolve host {host!r}: {exc}") from exc
    else:  # an address needs no resolver
        infos = [(None, None, None, "", (str(literal), port))]
    return _vetted(host, infos, allowed_hosts)


def _vetted(host: str, infos: list, allowed_hosts: tuple[str, ...] | list[str]) -> str:
    names, networks = _parse_allow_list(allowed_hosts)
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))
    if not addresses:
        raise UnresolvableHostError(f"Host {host!r} has no address.")
    if host.lower().rstrip(".").strip("[]") not in names:
        for ip in addresses:
            if _forbidden(ip) and not _allowed_by(ip, networks):
                raise BlockedAddressError(
                    f"Refusing to connect to {host} ({ip}): it is not a public address. "
                    "Add the host to LANGRUN_HTTP_ALLOWED_HOSTS to allow it."
                )
    return str(addresses[0])


class _Guard(aiohttp.abc.AbstractResolver):
    """Resolves host names to vetted addresses, and vets every address a socket is opened to.

    aiohttp asks the resolver for names only; an address in the URL (or in a redirect's Location) goes
    straight to a socket, which `socket` vets by the allow-list's networks. The address and port the resolver
    vetted for a host allowed by name pass there too (they reach what the name does). TLS still verifies the
    original host name.
    """

    def __init__(self, allowed_hosts: tuple[str, ...]):
        self._allowed = allowed_hosts
        self._resolved: set[tuple[str, int]] = set()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        address = await vet_host_async(host, port, self._allowed)
        self._resolved.add((address, port))
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [{"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass

    def socket(self, addr_info: tuple) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        if (sockaddr[0], sockaddr[1]) not in self._resolved:
            _vetted(sockaddr[0], [addr_info], self._allowed)
        return socket.socket(family=family, type=type_, proto=proto)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes milliseconds: once per process, not per request.
    return ssl.create_default_context()


@contextlib.asynccontextmanager
async def guarded_session(*, allowed_hosts: tuple[str, ...] | list[str]):
    """An aiohttp session for one call that refuses non-public addresses (see module docstring) and ignores the
    environment's proxies (one would connect on our behalf, unchecked)."""
    guard = _Guard(tuple(allowed_hosts))
    connector = aiohttp.TCPConnector(resolver=guard, socket_factory=guard.socket, use_dns_cache=False, ssl=_ssl_context())
    async with aiohttp.ClientSession(
        connector=connector,
        # A session per call: cookies a redirect sets reach its next hop, and no other call.
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(),  # none of aiohttp's own: send()'s deadline bounds the whole call
        max_line_size=65536,
        max_field_size=65536,
    ) as session:
        yield session


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    content: bytes
    charset: str | None


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    what: str,
    *,
    seconds: float,
    context: Any = None,
    follow_redirects: bool = True,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Answer:
    """Send and read at most MAX_RESPONSE_BYTES (or the run's output limit, when lower) within `seconds` in all
    (a server that drips its answer a byte at a time is cut off), mapping transport failures to node errors.

    `json_body` is sent as compact UTF-8 JSON; NaN and infinities, which no JSON reader takes, fail the node."""
    headers = dict(headers or {})
    output_limit = getattr(context, "max_output_bytes", None)
    limit = MAX_RESPONSE_BYTES if output_limit is None else min(MAX_RESPONSE_BYTES, output_limit)
    try:
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            headers.setdefault("Content-Type", "application/json")
        async with asyncio.timeout(seconds):
            # aiohttp counts the redirect that reaches its limit as one too many.
            redirects = MAX_REDIRECTS + 1
            async with session.request(
                method, url, allow_redirects=follow_redirects, max_redirects=redirects, headers=headers, **kwargs
            ) as response:
                content = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    content += chunk
                    if len(content) > limit:
                        raise NodeError(f"{what}: the response is larger than {limit} bytes.")
                headers: dict[str, str] = {}
                for name, value in response.headers.items():  # a repeated header's values joined, as HTTP reads them
                    name = name.lower()
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
                return Answer(response.status, headers, bytes(content), response.charset)
    except BlockedAddressError as exc:
        raise NodeError(f"{what}: {exc}") from exc
    except TimeoutError as exc:
        raise RetryableNodeError(f"{what}: timed out: no complete answer within {seconds:.3g} s.") from exc
    except aiohttp.TooManyRedirects as exc:
        raise NodeError(f"{what}: more than {MAX_REDIRECTS} redirects.") from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError) as exc:
        raise NodeError(f"{what}: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise RetryableNodeError(f"{what}: connection failed: {exc}") from exc


def _decode(answer: Answer) -> Any:
    try:
        text = answer.content.decode(answer.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = answer.content.decode("utf-8", errors="replace")
    media_type = answer.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


class _UrlFormatter(_SafeFormatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        return quote(super().format_field(value, format_spec), safe="")


def _fill(value: Any, values: dict, formatter: _SafeFormatter) -> Any:
    if isinstance(value, str):
        return formatter.vformat(value, (), values)
    if isinstance(value, dict):
        return {k: _fill(v, values, formatter) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values, formatter) for v in value]
    return value


def _timeout_input(*, default: float) -> Input:
    return Input(
        "timeout",
        "number",
        default=default,
        description="Seconds the whole request may take: connecting, sending, the answer and any redirects.",
        connectable=False,
    )


def _query_value(value: Any) -> str | int | float:
    """A query parameter's value as text or a number: true/false for a boolean, empty for null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return value if isinstance(value, str | int | float) else as_text(value)


def _timeout(own: float, context: Any) -> float:
    remaining = context.remaining() if hasattr(context, "remaining") else None
    return own if remaining is None else min(own, remaining)


@register
class HTTPRequest(Component):
    """Calls an HTTP API. `{field}` placeholders in the URL (URL-encoded) and in text of the body are filled from `data`.

    An object or list body is sent as JSON, text as text. Non-public addresses are refused
    unless allowed (LANGRUN_HTTP_ALLOWED_HOSTS). `timeout` bounds the whole request (within the run's
    time left), and the answer is read up to 5 MB or LANGRUN_MAX_OUTPUT_BYTES. Timeouts, connection failures, 429 and 5xx
    answers are retryable failures; another status than `expected_status` (any 2xx/3xx when
    unset) fails the node.
    """

    name = "HTTPRequest"
    description = "Sends an HTTP request and gives the status, headers and (JSON-parsed) body of the answer."
    inputs = (
        Input("data", "any", required=False, description="Values for the URL's and body's {field} placeholders."),
        Input("method", "str", default="GET", choices=METHODS, description="HTTP method.", connectable=False),
        Input("url", "str", description="http(s) URL; may hold {field} placeholders.", connectable=False),
        Input("headers", "object", required=False, description="Request headers.", connectable=False),
        Input("query", "object", required=False, description="Query parameters.", connectable=False),
        Input("body", "any", required=False, description="Object/list (sent as JSON) or text.", connectable=False),
        _timeout_input(default=10),
        Input("expected_status", "int", required=False, description="The only acceptable status code.", connectable=False),
    )
    outputs = (
        Output("status", "int", "The answer's status code."),
        Output("headers", "object", "The answer's headers (lower-case names)."),
        Output("body", "any", "The answer's body: parsed JSON, or text."),
    )

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        problems = []
        url = params.get("url")
        if isinstance(url, str) and not url.lower().startswith(("http://", "https://", "{")):
            problems.append(("url", "The URL must start with http:// or https://.", "url_scheme"))
        timeout = params.get("timeout")
        if isinstance(timeout, int | float) and not 0 < timeout <= 600:
            problems.append(("timeout", "The timeout must be between 0 and 600 seconds.", "less_than_equal"))
        status = params.get("expected_status")
        if isinstance(status, int) and not 100 <= status <= 599:
            problems.append(("expected_status", "A status code is between 100 and 599.", "less_than_equal"))
        for name in ("headers", "query"):
            value = params.get(name)
            if isinstance(value, dict) and not all(isinstance(v, str | int | float) or is_variable_ref(v) for v in value.values()):
                problems.append((name, f"The values of {name} must be text or numbers.", "string_type"))
        return problems

    async def run(
        self,
        *,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict | None = None,
        query: dict | None = None,
        body: Any = None,
        timeout: float = 10,
        expected_status: int | None = None,
    ) -> dict[str, Any]:
        values = data if isinstance(data, dict) else {}
        try:
            limit = getattr(self.context, "max_output_bytes", None)
            url = _UrlFormatter(limit=limit).vformat(url, (), values)
            if data is not None and body is not None:
                body = _fill(body, values, _SafeFormatter(limit=limit))
        except (ValueError, IndexError) as exc:
            raise NodeError(f"URL or body template is malformed: {exc}") from exc
        if not url.lower().startswith(("http://", "https://")):
            raise NodeError(f"The URL must start with http:// or https://, got {url[:100]!r}.")
        what = f"{method} {url.split('?', 1)[0]}"
        kwargs: dict[str, Any] = {
            "headers": {k: str(v) for k, v in (headers or {}).items()},
            "params": {k: _query_value(v) for k, v in (query or {}).items()} or None,
        }
        if isinstance(body, dict | list):
            kwargs["json_body"] = body
        elif body is not None:
            kwargs["data"] = as_text(body).encode()
        seconds = _timeout(timeout, self.context)
        async with guarded_session(allowed_hosts=self.context.http_allowed_hosts) as session:
            answer = await send(session, method, url, what, seconds=seconds, context=self.context, **kwargs)
        status = answer.status
        result = {"status": status, "headers": answer.headers, "body": _decode(answer)}
        if expected_status is not None and status == expected_status:
            return result
        snippet = as_text(result["body"])[:200]
        if status == 429 or status >= 500:
            raise RetryableNodeError(f"{what} answered {status}: {snippet}")
        if expected_status is not None:
            raise NodeError(f"{what} answered {status}, expected {expected_status}: {snippet}")
        if status >= 400:
            raise NodeError(f"{what} answered {status}: {snippet}")
        return result


@register
class LanguageModel(Component):
    """Asks any OpenAI-compatible chat completions API (`{base_url}/chat/completions`) to answer `prompt`.

    `api_key` is best given as a variable reference (`{"variable": "OPENAI_API_KEY"}`): its value is
    masked in run records. Rate limits (429), 5xx answers, timeouts and connection failures are
    retryable; other errors fail the node with the API's message.
    """

    name = "LanguageModel"
    description = "Calls an OpenAI-compatible chat completions API."
    inputs = (
        Input("prompt", "any", description="The user message (text; anything else is sent as JSON)."),
        Input("base_url", "str", default="https://api.openai.com/v1", description="The API's base URL.", connectable=False),
        Input("model", "str", description="Model name, e.g. gpt-4o-mini.", connectable=False),
        Input("api_key", "str", required=False, description="API key; use a credential variable.", connectable=False),
        Input("system_prompt", "str", required=False, description="System message.", connectable=False),
        Input("temperature", "number", required=False, description="Sampling temperature (0 to 2).", connectable=False),
        Input("max_tokens", "int", required=False, description="Most tokens to generate.", connectable=False),
        _timeout_input(default=60),
    )
    outputs = (
        Output("text", "str", "The answer's text."),
        Output("response", "object", "The API's whole JSON response."),
    )

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str, str]]:
        problems = []
        base_url = params.get("base_url")
        if isinstance(base_url, str) and not base_url.lower().startswith(("http://", "https://")):
            problems.append(("base_url", "The base URL must start with http:// or https://.", "url_scheme"))
        temperature = params.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 2:
            problems.append(("temperature", "The temperature must be between 0 and 2.", "less_than_equal"))
        max_tokens = params.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens < 1:
            problems.append(("max_tokens", "max_tokens must be at least 1.", "greater_than_equal"))
        timeout = params.get("timeout")
        if isinstance(timeout, int | float) and not 0 < timeout <= 600:
            problems.append(("timeout", "The timeout must be between 0 and 600 seconds.", "less_than_equal"))
        return problems

    async def run(
        self,
        *,
        prompt: Any,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        system_prompt: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": as_text(prompt)})
        body: dict[str, Any] = {"model": model, "messages": messages}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = base_url.rstrip("/") + "/chat/completions"
        what = f"Language model at {base_url.rstrip('/')}"
        seconds = _timeout(timeout, self.context)
        async with guarded_session(allowed_hosts=self.context.http_allowed_hosts) as session:
            reply = await send(session, "POST", url, what, seconds=seconds, context=self.context, json_body=body, headers=headers)
        answer = _decode(reply)
        if reply.status == 429 or reply.status >= 500:
            raise RetryableNodeError(f"{what} answered {reply.status}: {_api_error(answer)}")
        if reply.status >= 400:
            raise NodeError(f"{what} answered {reply.status}: {_api_error(answer)}")
        try:
            text = answer["choices"][0]["message"]["content"]
        except (TypeError, KeyError, IndexError) as exc:
            raise NodeError(f"{what} gave an answer without choices[0].message.content: {as_text(answer)[:200]}") from exc
        return {"text": text if isinstance(text, str) else as_text(text), "response": answer}


def _api_error(answer: Any) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict) and answer["error"].get("message"):
        return str(answer["error"]["message"])[:300]
    return as_text(answer)[:300]
