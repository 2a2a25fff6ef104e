from django.urls import reverse
from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Routes that match with or without the trailing slash, as Langflow's clients call them."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


def route_url(request, name: str, *, query: str = "", **kwargs) -> str:
    """The URL of a named route, absolute when there is a request; reversed, so that it carries the prefix the
    service is mounted under (SCRIPT_NAME)."""
    path = reverse(name, kwargs=kwargs) + (f"?{query}" if query else "")
    return request.build_absolute_uri(path) if request is not None else path
