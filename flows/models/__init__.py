"""The flows app's models, one module per concern; Django and callers import them from here."""

from flows.models.flows import ENDPOINT_NAME_RE, ENDPOINT_NAME_UNIQUE, WEBHOOK_HANDSHAKES, WEBHOOK_METHODS, Flow, FlowSchedule, FlowVersion
from flows.models.metrics import MetricCounter
from flows.models.runs import FlowRun, FlowRunQuerySet, NodeResult, ReplayJob, RunAttempt
from flows.models.variables import VARIABLE_NAME_RE, Variable

__all__ = [
    "ENDPOINT_NAME_RE",
    "ENDPOINT_NAME_UNIQUE",
    "VARIABLE_NAME_RE",
    "WEBHOOK_HANDSHAKES",
    "WEBHOOK_METHODS",
    "Flow",
    "FlowRun",
    "FlowRunQuerySet",
    "FlowSchedule",
    "FlowVersion",
    "MetricCounter",
    "NodeResult",
    "ReplayJob",
    "RunAttempt",
    "Variable",
]
