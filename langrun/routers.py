from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Routes that match with or without the trailing slash, as Langflow's clients call them."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
