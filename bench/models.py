from django.db import models


class BaselineRow(models.Model):
    """One request to the benchmark's baseline view: the cheapest possible "accept".

    Exists only under bench.settings, so the webhook's cost can be read as a
    ratio of the bare insert-and-202 on the same server set-up.
    """

    received_at = models.DateTimeField(auto_now_add=True)
    body = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"baseline row {self.pk}"
