"""Counters kept in the database, so that every process adds to the same one."""

from django.db import models


class MetricCounter(models.Model):
    """A named, labelled number kept in the database so every process adds to the same one.

    Holds what the run ledger cannot tell at scrape time: rejected webhook
    calls by status code, runs the sweep re-enqueued, the last sweep's time,
    and the contributions of runs that retention deleted (so the counters
    derived from the ledger never go down).
    """

    name = models.CharField(max_length=100)
    labels = models.CharField(max_length=300, blank=True, help_text='The labels as JSON with sorted keys, e.g. {"code": "403"}.')
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="metric_counter_unique")]

    def __str__(self) -> str:
        return f"{self.name}{{{self.labels}}} {self.value}"
