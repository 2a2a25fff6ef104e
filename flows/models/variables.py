"""Variables: named values (credentials, settings) that flow params refer to."""

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

VARIABLE_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Variable(models.Model):
    """A named value of one user that flow params refer to as `{"variable": "NAME"}`.

    A `generic` variable is stored as it is; a `credential` is encrypted with
    Fernet (the first key of LANGRUN_VARIABLES_KEY, or one derived from SECRET_KEY) and is never
    shown again after saving: the API and the admin mask it, and run records
    mask its value wherever it would appear. Names are unique per owner.
    """

    class Kind(models.TextChoices):
        GENERIC = "generic"
        CREDENTIAL = "credential"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="variables")
    name = models.CharField(
        max_length=100,
        validators=[RegexValidator(VARIABLE_NAME_RE, "Use letters, digits and '_', not starting with a digit.")],
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CREDENTIAL)
    value = models.TextField(blank=True, help_text="The value; for a credential, its Fernet token.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="variable_name_unique_per_user")]

    def __str__(self) -> str:
        return self.name
