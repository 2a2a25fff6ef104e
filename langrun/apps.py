from django.apps import AppConfig


class LangrunConfig(AppConfig):
    name = "langrun"
    verbose_name = "Identity"
