from django.apps import AppConfig


class LangrunConfig(AppConfig):
    name = "langrun"
    verbose_name = "Identity"

    def ready(self) -> None:
        from django.contrib import admin

        from langrun.admin import restrict_django_q_admin

        # Here rather than in langrun/admin.py: other apps' admin modules import that one, maybe before
        # django-q2's admin has registered its models (the admin loads every app's admin before any ready()).
        restrict_django_q_admin(admin.site)
