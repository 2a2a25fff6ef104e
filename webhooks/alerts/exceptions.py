"""The alerts' domain errors: each carries the HTTP status and code the API answers it with (langrun/exceptions.py
renders every DomainError), and a message the admin shows as it is."""

from __future__ import annotations

from rest_framework import status

from langrun.exceptions import DomainError


class AlertsError(DomainError):
    """Base of the alerts' domain errors: a subclass sets `status` and `code`."""


class DeliveryBeingSent(AlertsError):
    """A retry of a delivery whose send is due or under way: it is sent once, so the second retry is refused (409)."""

    status = status.HTTP_409_CONFLICT
    code = "delivery_being_sent"
