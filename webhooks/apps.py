from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"

    def ready(self):
        from webhooks import schema  # noqa: F401  registers the webhook's OpenAPI description
