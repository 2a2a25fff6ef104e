"""A webhook sender's POST, answered without the middleware it has no use for."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed, TooManyFieldsSent
from django.core.handlers.exception import convert_exception_to_response
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.urls import Resolver404, get_script_prefix, resolve, reverse, set_urlconf

from flows.metrics import webhook_answer_count
from langrun.middleware import api_query_refusal
from webhooks.views import WebhookView, is_senders_request


class WebhookSenderMiddleware:
    """Answers a webhook sender's POST itself: the middleware listed after this one never see it.

    For a sender's POST they have nothing to do, yet cost about a tenth of the webhook's CPU: the session,
    CSRF, authentication and message middleware prepare what the webhook never reads (its sender
    authenticates with an API key or a signature, sends no cookie the service reads, and the view is exempt
    from CSRF), whitenoise looks for a static file, and Django's handler runs its view-middleware steps.
    What they do to such a request and its answer is done here, by the same code in the same order:
    CommonMiddleware's checks (the Host header, forbidden user agents) and Content-Length, the API's NUL
    guard, the count of refused webhooks, X-Frame-Options; an exception becomes the same answer (a 500, a
    400 for a disallowed Host), with the same signal and log. Tests compare the answers of the two paths
    byte for byte. Listed right after SecurityMiddleware, which still redirects to HTTPS and sets its headers
    on these answers; middleware that must see webhooks goes before this one.

    Everything else passes on: another path or method, `?wait=`, the browsable API (which needs the session
    and CSRF middleware), a path that does not resolve to the webhook, a query string too long to read. With
    ATOMIC_REQUESTS on, the middleware steps aside altogether, so that every view keeps its transaction.
    """

    def __init__(self, get_response):
        if any(db.get("ATOMIC_REQUESTS") for db in settings.DATABASES.values()):
            # Django's handler wraps every view in a transaction then; the whole chain keeps doing it.
            raise MiddlewareNotUsed("ATOMIC_REQUESTS is on: webhooks take the whole middleware chain")
        self.get_response = get_response
        self.common = CommonMiddleware(get_response)
        self.frame_options = XFrameOptionsMiddleware(get_response)
        # The webhook URL's fixed part as `path_info` starts with it (without the script prefix), found once:
        # a cheap test that lets every other request through untouched.
        marker = "flow"
        url = reverse("webhook", kwargs={"flow_id_or_name": marker})
        url = "/" + url[len(get_script_prefix()) :]
        self.prefix = url[: url.rindex(marker)]
        # Where the whole chain turns an exception into an answer: around CommonMiddleware, and around the view.
        self.through_common = convert_exception_to_response(self._through_common)
        self.respond = convert_exception_to_response(self._respond)

    def __call__(self, request):
        if request.method != "POST" or not request.path_info.startswith(self.prefix):
            return self.get_response(request)
        urlconf = getattr(request, "urlconf", None)
        if urlconf is not None:
            set_urlconf(urlconf)  # as the handler does before it resolves
        try:
            match = resolve(request.path_info, urlconf)
            senders = getattr(match.func, "view_class", None) is WebhookView and is_senders_request(request)
        except (Resolver404, TooManyFieldsSent):  # the whole chain answers these as it always has
            return self.get_response(request)
        if not senders:
            return self.get_response(request)
        request.resolver_match = match
        return self.through_common(request)

    def _through_common(self, request):
        response = self.common.process_request(request)  # a disallowed Host raises before the view runs
        if response is None:
            response = self.respond(request)
            webhook_answer_count(response)
            response = self.frame_options.process_response(request, response)
        return self.common.process_response(request, response)

    @staticmethod
    def _respond(request):
        refusal = api_query_refusal(request)
        if refusal is not None:
            return refusal
        match = request.resolver_match
        response = match.func(request, *match.args, **match.kwargs)
        if hasattr(response, "render") and callable(response.render):  # DRF's answer to an error, as the handler renders it
            response = response.render()
        return response
