"""HTTPRequest and LanguageModel against small HTTP servers started on 127.0.0.1 (and 127.0.0.2)."""

import asyncio
import contextlib
import functools
import json
import socket
import socketserver
import threading
import time
import zlib
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from flows.engine import NodeError, RetryableNodeError, RunContext, registry
from flows.engine.components.http import BlockedAddressError, guarded_session, vet_host

LOCAL = ("127.0.0.1",)


def call(type_name, context, **values):
    """Runs one component (its run() is a coroutine) to its result."""
    return asyncio.run(registry.get(type_name)(node_id="n", context=context).run(**values))


def http(allowed=LOCAL, **values):
    return call("HTTPRequest", RunContext(http_allowed_hosts=allowed), **values)


def llm(allowed=LOCAL, **values):
    return call("LanguageModel", RunContext(http_allowed_hosts=allowed), **values)


# --- HTTPRequest ---------------------------------------------------------------


def test_get_with_templated_url_query_and_headers(server):
    result = http(
        url=server.url + "/orders/{id}",
        data={"id": "a b/1"},
        query={"page": 2},
        headers={"X-Token": "t"},
    )
    assert result["status"] == 200
    assert result["body"] == {"ok": True, "path": "/orders/a%20b%2F1?page=2"}
    assert result["headers"]["x-trace"] == "abc"
    assert server.requests[0]["headers"]["x-token"] == "t"


def test_post_json_body_templated_from_data(server):
    http(method="POST", url=server.url + "/hook", data={"name": "Ada"}, body={"text": "Hi {name}", "n": 1})
    sent = server.requests[0]
    assert sent["method"] == "POST" and json.loads(sent["body"]) == {"text": "Hi Ada", "n": 1}
    assert sent["headers"]["content-type"] == "application/json"


def test_a_json_body_no_json_reader_takes_fails_the_node_and_sends_nothing(server):
    with pytest.raises(NodeError, match="not JSON compliant") as exc:
        http(method="POST", url=server.url + "/hook", body={"n": float("nan")})
    assert not isinstance(exc.value, RetryableNodeError)
    with pytest.raises(NodeError, match="not JSON compliant"):
        llm(base_url=server.url, model="m", prompt="hi", temperature=float("inf"))
    assert server.requests == []


def test_text_body_and_text_answer(server):
    result = http(method="PUT", url=server.url + "/text", body="raw words")
    assert result["body"] == "plain text"
    assert server.requests[0]["body"] == b"raw words"


def test_redirects_within_allowed_hosts_are_followed(server):
    assert http(url=server.url + "/redirect-local")["body"]["path"] == "/json"


def test_4xx_fails_and_expected_status_accepts_it(server):
    with pytest.raises(NodeError, match="answered 404") as exc:
        http(url=server.url + "/status/404")
    assert not isinstance(exc.value, RetryableNodeError)
    assert http(url=server.url + "/status/404", expected_status=404)["status"] == 404
    with pytest.raises(NodeError, match="expected 201"):
        http(url=server.url + "/json", expected_status=201)


@pytest.mark.parametrize("code", [500, 503, 429])
def test_5xx_and_429_are_retryable(server, code):
    with pytest.raises(RetryableNodeError, match=f"answered {code}"):
        http(url=server.url + f"/status/{code}")


def test_timeout_is_retryable(server):
    with pytest.raises(RetryableNodeError, match="timed out"):
        http(url=server.url + "/slow", timeout=0.2)


def test_connection_refused_is_retryable(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(RetryableNodeError, match="connection failed"):
        http(url=f"http://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://[::1]:9/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://0.0.0.0:9/",
        "http://100.64.0.1/",
    ],
)
def test_non_public_addresses_are_refused_without_allow_list(url):
    with pytest.raises(NodeError, match="not a public address"):
        http(allowed=(), url=url, timeout=1)


def test_redirect_to_metadata_is_refused_even_from_an_allowed_host(server):
    with pytest.raises(NodeError, match="169.254.169.254"):
        http(url=server.url + "/redirect-to-metadata")
    assert len(server.requests) == 1


def test_allow_list_by_cidr_and_by_name(server):
    port = server.server_address[1]
    assert http(allowed=("127.0.0.0/8",), url=server.url + "/json")["status"] == 200
    assert http(allowed=("localhost",), url=f"http://localhost:{port}/json")["status"] == 200


def test_vet_host_checks_every_resolved_address():
    assert vet_host("127.0.0.1", 80, ["127.0.0.1"]) == "127.0.0.1"
    with pytest.raises(BlockedAddressError):
        vet_host("localhost", 80, ["10.0.0.0/8"])


def test_bad_urls_fail_at_save_and_at_run():
    from flows.engine import GraphValidationError, parse_graph

    with pytest.raises(GraphValidationError) as exc:
        parse_graph({"nodes": [{"id": "h", "type": "HTTPRequest", "params": {"url": "file:///etc/passwd", "timeout": 0}}], "edges": []})
    assert {i.type for i in exc.value.issues} == {"url_scheme", "less_than_equal"}
    with pytest.raises(NodeError, match="http:// or https://"):
        http(url="{target}", data={"target": "ftp://x"})


# --- LanguageModel -----------------------------------------------------------------


def test_language_model_calls_chat_completions(server):
    result = llm(
        prompt="Summarise: hi",
        base_url=server.url + "/v1",
        model="tiny",
        api_key="sk-test-secret",
        system_prompt="Be brief.",
        temperature=0.1,
        max_tokens=20,
    )
    assert result["text"] == "echo: Summarise: hi"
    assert result["response"]["model"] == "tiny"
    sent = json.loads(server.requests[0]["body"])
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise: hi"}]
    assert sent["temperature"] == 0.1 and sent["max_tokens"] == 20


def test_language_model_api_error_is_reported(server):
    with pytest.raises(NodeError, match="Incorrect API key") as exc:
        llm(prompt="x", base_url=server.url + "/v1", model="tiny", api_key="wrong")
    assert not isinstance(exc.value, RetryableNodeError)


def test_language_model_rate_limit_is_retryable_and_odd_answers_fail(server):
    with pytest.raises(RetryableNodeError, match="429"):
        llm(prompt="x", base_url=server.url + "/status/429", model="tiny")
    with pytest.raises(NodeError, match="without choices"):
        llm(prompt="x", base_url=server.url + "/other", model="tiny")


def test_language_model_is_refused_on_local_addresses_unless_allowed(server):
    with pytest.raises(NodeError, match="not a public address"):
        llm(allowed=(), prompt="x", base_url=server.url + "/v1", model="tiny", api_key="sk-test-secret")
    assert server.requests == []


# --- IPv6 addresses that carry an IPv4 address ------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64 prefix
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::a00:1",  # IPv4-compatible 10.0.0.1
        "::ffff:a9fe:a9fe",  # IPv4-mapped 169.254.169.254
    ],
)
def test_ipv6_forms_of_non_public_ipv4_addresses_are_refused(address):
    with pytest.raises(BlockedAddressError, match="not a public address"):
        vet_host(address, 80, [])
    with pytest.raises(NodeError, match="not a public address"):
        http(allowed=(), url=f"http://[{address}]:9/", timeout=1)


def test_ipv6_forms_are_judged_by_the_ipv4_address_they_carry():
    for address in ("64:ff9b::808:808", "2002:808:808::1", "::808:808", "::ffff:808:808"):
        assert vet_host(address, 80, []) == address
    # An allow-list entry for the IPv4 network covers its IPv6 forms too.
    for address in ("64:ff9b::7f00:1", "2002:7f00:1::1", "::7f00:1", "::ffff:7f00:1"):
        assert vet_host(address, 80, ["127.0.0.0/8"]) == address
    with pytest.raises(BlockedAddressError):
        vet_host("64:ff9b::a00:1", 80, ["127.0.0.0/8"])


# --- A total deadline and a size cap against a server that drips or floods ---------------------


class Drip(socketserver.BaseRequestHandler):
    """Reads a request, then answers by path: /headers drips the status line, /body drips the body
    (one byte per `interval` s), /flood sends an endless body as fast as the client reads."""

    def handle(self):
        self.request.settimeout(30)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            request += chunk
        path = request.split(b" ", 2)[1].decode()
        interval = self.server.interval
        try:
            if path == "/headers":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
                    self.request.sendall(bytes([byte]))
                    time.sleep(interval)
            elif path == "/body":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(1000):
                    self.request.sendall(b"x")
                    time.sleep(interval)
            elif path == "/flood":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
                while not self.server.stop.is_set():
                    self.request.sendall(chunk)
                    self.server.sent += 65536
        except OSError:
            pass  # the client gave up, as it should


@pytest.fixture
def drip():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    server.interval, server.sent, server.stop = 0.3, 0, threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/headers", "/body"])
def test_a_dripping_server_is_cut_off_at_the_node_timeout(drip, path):
    started = time.monotonic()
    with pytest.raises(RetryableNodeError, match="timed out"):
        http(url=drip.url + path, timeout=1)
    assert 0.9 < time.monotonic() - started < 1.6


def test_a_dripping_server_is_cut_off_at_the_runs_remaining_time(drip):
    context = RunContext(http_allowed_hosts=LOCAL, deadline=time.monotonic() + 0.8)
    started = time.monotonic()
    with pytest.raises(RetryableNodeError, match="timed out"):
        call("HTTPRequest", context, url=drip.url + "/body", timeout=30)
    assert time.monotonic() - started < 1.4


def test_a_flooding_server_is_read_up_to_the_output_limit(drip):
    context = RunContext(http_allowed_hosts=LOCAL, max_output_bytes=200_000)
    with pytest.raises(NodeError, match="larger than 200000 bytes"):
        call("HTTPRequest", context, url=drip.url + "/flood", timeout=10)
    drip.stop.set()
    assert drip.sent < 5_000_000


# --- Against a raw server on 127.0.0.2 (a "public" origin, allowed by CIDR) and its forbidden twin on 127.0.0.1 ---

PUBLIC = ("127.0.0.2/32",)


@functools.cache
def bomb(encoding, megabytes):
    """`megabytes` MB of zeros, gzip- or deflate- (zlib-) compressed: a few KB on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    return b"".join(compressor.compress(bytes(1 << 20)) for _ in range(megabytes)) + compressor.flush()


class Raw(socketserver.BaseRequestHandler):
    """Records each request, and answers with raw bytes by path: /redir?to=URL[&cookie=1] redirects there (setting a
    cookie), /chain/N redirects N times, /charset, /dupes and /bighdr send odd headers, /gzip and /deflate[?chunked=1]
    a compression bomb; any other path answers {"path": ..., "headers": ...} (the request's)."""

    def handle(self):
        self.request.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            if not (chunk := self.request.recv(65536)):
                return
            data += chunk
        lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target, headers = lines[0].split(" ")[1], {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.server.requests.append({"target": target, "headers": headers})
        with contextlib.suppress(OSError):
            self.request.sendall(self.answer(target, headers))

    def answer(self, target, headers):
        path, query = urlsplit(target).path, dict(parse_qsl(urlsplit(target).query))
        code, extra, ctype = 200, [], "application/json"
        body = json.dumps({"path": target, "headers": headers}).encode()
        if path == "/redir":
            code, extra = 302, [f"Location: {query['to']}"] + ["Set-Cookie: session=s3cret; Path=/"] * ("cookie" in query)
        elif path.startswith("/chain/") and path != "/chain/0":
            code, extra = 302, [f"Location: /chain/{int(path[7:]) - 1}"]
        elif path == "/charset":
            body, ctype = b'{"a": 1}', "application/json; charset=bogus"
        elif path == "/dupes":
            extra = ["Set-Cookie: a=1", "Set-Cookie: b=2", "X-Dup: one", "X-Dup: two"]
        elif path == "/bighdr":
            extra = ["X-Big: " + "a" * 12_000]
        elif path in ("/gzip", "/deflate"):
            body, ctype, extra = bomb(path[1:], 16), "text/plain", [f"Content-Encoding: {path[1:]}"]
        if "chunked" in query:
            parts = [body[i : i + 4096] for i in range(0, len(body), 4096)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
            extra.append("Transfer-Encoding: chunked")
        else:
            extra.append(f"Content-Length: {len(body)}")
        head = [f"HTTP/1.1 {code} X", f"Content-Type: {ctype}", "Connection: close", *extra]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = allow_reuse_address = True

    def __init__(self, host, port=0):
        super().__init__((host, port), Raw)
        self.requests = []
        self.url = f"http://{host}:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def handle_error(self, request, client_address):
        pass  # a client that gave up (a refused bomb) is expected


@pytest.fixture
def origin():
    """The server on 127.0.0.2, with `.twin`, the same on 127.0.0.1 at the same port: what a refused redirect would reach."""
    for _ in range(5):  # the port may be taken on 127.0.0.1: try another
        server = RawServer("127.0.0.2")
        server.port = server.server_address[1]
        try:
            server.twin = RawServer("127.0.0.1", server.port)
            break
        except OSError:
            server.shutdown()
            server.server_close()
    yield server
    for each in (server, server.twin):
        each.shutdown()
        each.server_close()


def public(**values):
    return http(allowed=PUBLIC, **values)


def redirect(base, to, **query):
    return f"{base}/redir?to={quote(to, safe='')}" + "".join(f"&{k}={v}" for k, v in query.items())


def test_an_unknown_charset_falls_back_to_utf8(origin):
    assert public(url=origin.url + "/charset")["body"] == {"a": 1}


def test_repeated_response_headers_are_all_kept(origin):
    headers = public(url=origin.url + "/dupes")["headers"]
    assert headers["set-cookie"] == "a=1, b=2" and headers["x-dup"] == "one, two"


def test_five_redirects_are_followed_and_a_sixth_is_refused(origin):
    assert public(url=origin.url + "/chain/5")["body"]["path"] == "/chain/0"
    with pytest.raises(NodeError, match="more than 5 redirects"):
        public(url=origin.url + "/chain/6")


@pytest.mark.parametrize("to", ["file:///etc/passwd", "ftp://example.com/"])
def test_a_redirect_to_another_scheme_fails_and_is_not_retryable(origin, to):
    with pytest.raises(NodeError) as exc:
        public(url=redirect(origin.url, to))
    assert not isinstance(exc.value, RetryableNodeError)


def test_query_values_true_false_and_none_are_sent_as_true_false_and_empty(origin):
    result = public(url=origin.url + "/q", query={"yes": True, "no": False, "none": None})
    assert result["body"]["path"] == "/q?yes=true&no=false&none="


def test_the_session_adds_no_deadline_of_its_own():
    # aiohttp's default (total=300, sock_connect=30) would cut a longer node short; send()'s deadline is the only one.
    async def timeout():
        async with guarded_session(allowed_hosts=()) as session:
            return session.timeout

    session_timeout = asyncio.run(timeout())
    assert session_timeout.total is None and session_timeout.sock_connect is None


def test_a_long_response_header_is_accepted(origin):
    assert public(url=origin.url + "/bighdr")["headers"]["x-big"] == "a" * 12_000


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "0x7f.1", "127.0.0.1.", "localhost", "[::1]", "[::ffff:127.0.0.1]"])
def test_a_redirect_to_a_form_of_loopback_is_refused(origin, host):
    with pytest.raises(NodeError):
        public(url=redirect(origin.url, f"http://{host}:{origin.port}/"))
    assert len(origin.requests) == 1 and origin.twin.requests == []


def test_a_name_that_resolves_elsewhere_on_a_redirect_is_refused(origin, monkeypatch):
    real, answers = socket.getaddrinfo, iter(["127.0.0.2", "127.0.0.1"])  # DNS rebinding

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(NodeError, match="not a public address"):
        public(url=redirect(f"http://rebind.test:{origin.port}", f"http://rebind.test:{origin.port}/"))
    assert len(origin.requests) == 1 and origin.twin.requests == []


@pytest.mark.parametrize("path", ["/gzip", "/gzip?chunked=1", "/deflate"])
def test_a_compression_bomb_is_cut_at_the_output_limit_counted_decompressed(origin, path):
    # 16 MB of zeros travel as some 16 KB: well under the limit as sent, far over it as read.
    context = RunContext(http_allowed_hosts=PUBLIC, max_output_bytes=1_000_000)
    with pytest.raises(NodeError, match="larger than 1000000 bytes"):
        call("HTTPRequest", context, url=origin.url + path)


def test_credentials_are_dropped_on_a_cross_origin_redirect(origin):
    secrets = {"Authorization": "Bearer S", "Cookie": "sid=S", "Proxy-Authorization": "Basic S"}
    http(allowed=(*PUBLIC, "127.0.0.1"), url=redirect(origin.url, origin.twin.url + "/echo"), headers=secrets)
    assert origin.requests[0]["headers"]["authorization"] == "Bearer S"
    assert not {"authorization", "cookie", "proxy-authorization"} & set(origin.twin.requests[0]["headers"])


def test_environment_proxies_are_ignored(origin, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, origin.url)  # an allowed proxy that would reach the forbidden twin for us
    with pytest.raises(NodeError, match="not a public address"):
        public(url=origin.twin.url + "/")
    assert origin.requests == [] and origin.twin.requests == []


def test_a_cookie_set_by_a_redirect_reaches_the_next_hop_but_not_another_call(origin):
    assert public(url=redirect(origin.url, "/echo", cookie=1))["body"]["headers"]["cookie"] == "session=s3cret"
    assert "cookie" not in public(url=origin.url + "/echo")["body"]["headers"]


def test_a_host_allowed_by_name_lets_a_redirect_reach_its_address_on_the_same_port_only(origin, server):
    named = f"http://localhost:{origin.port}"  # the twin, reached by its allowed name
    with pytest.raises(NodeError, match="not a public address"):
        http(allowed=("localhost",), url=redirect(named, server.url + "/json"))
    assert server.requests == []
    assert http(allowed=("localhost",), url=redirect(named, origin.twin.url + "/echo"))["body"]["path"] == "/echo"
    assert [request["target"].split("?")[0] for request in origin.twin.requests] == ["/redir", "/redir", "/echo"]
