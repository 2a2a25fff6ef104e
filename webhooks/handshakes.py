"""Senders' URL checks, answered before anything is stored, for a flow whose `handshakes` list them.

Slack's `url_verification` (after its signature is checked), Meta's `GET ?hub.mode=subscribe&hub.verify_token=…
&hub.challenge=…` (the token is the flow's secret: it stands in for the signature Meta cannot send on a GET), and
Microsoft Graph's `?validationToken=…` (after the request is authenticated). A request that is not one of them, or
to a flow without that handshake, is an ordinary request.
"""

from __future__ import annotations

import hmac
import json

from django.http import HttpResponse
from rest_framework import exceptions

from flows.models import Flow
from webhooks.signatures import webhook_signing_secrets

INVALID_VERIFY_TOKEN = "Invalid hub.verify_token."


class HandshakeAnswer(Exception):  # noqa: N818 - not an error: it carries the answer past the rest of the request
    """A handshake's answer: the view sends `response` as it is."""

    def __init__(self, response: HttpResponse):
        self.response = response
        super().__init__("handshake")


def _enabled(flow: Flow, name: str) -> bool:
    return name in flow.handshakes.split(",") if flow.handshakes else False


def webhook_handshake_before_verification(*, flow: Flow, method: str, query) -> None:
    """Meta's verification GET: raises HandshakeAnswer with the challenge, or PermissionDenied for a wrong token."""
    if method != "GET" or query.get("hub.mode") != "subscribe" or not _enabled(flow, "meta"):
        return
    token = query.get("hub.verify_token", "")
    if not any(hmac.compare_digest(s.encode(), token.encode()) for s in webhook_signing_secrets(flow=flow)):
        raise exceptions.PermissionDenied(INVALID_VERIFY_TOKEN)
    raise HandshakeAnswer(HttpResponse(query.get("hub.challenge", ""), content_type="text/plain; charset=utf-8"))


def webhook_handshake_after_verification(*, flow: Flow, method: str, query, body: bytes) -> None:
    """Graph's `?validationToken=` and Slack's `url_verification`, for an authenticated request: raises HandshakeAnswer."""
    if "validationToken" in query and _enabled(flow, "graph"):
        raise HandshakeAnswer(HttpResponse(query["validationToken"], content_type="text/plain; charset=utf-8"))
    if method == "POST" and _enabled(flow, "slack") and b"url_verification" in body:
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):  # not the handshake: the body's decoding answers it as any request's
            return
        if isinstance(message, dict) and message.get("type") == "url_verification" and isinstance(message.get("challenge"), str):
            raise HandshakeAnswer(HttpResponse(json.dumps({"challenge": message["challenge"]}), content_type="application/json"))
