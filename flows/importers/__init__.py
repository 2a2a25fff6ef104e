"""Converters from other tools' flow formats to langrun's native format (plain Python, no Django)."""

from flows.importers.langflow import ImportProblem, is_langflow_flow, langflow_to_native

__all__ = ["ImportProblem", "is_langflow_flow", "langflow_to_native"]
