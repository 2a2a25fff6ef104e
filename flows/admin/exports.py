"""Runs exported from the admin as CSV or JSON: the rows of flows.services.reports, written for a spreadsheet or a
script. Cells a spreadsheet would read as a formula are quoted (OWASP's CSV injection advice)."""

from __future__ import annotations

import csv
import io
import json

from django.http import HttpResponse
from django.utils import timezone

from flows.services.reports import EXPORT_FIELDS, flow_runs_export_rows

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value) -> str:
    """A cell's text, with a leading quote where a spreadsheet would take the text for a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def runs_export_response(runs, fmt: str) -> HttpResponse:
    rows = flow_runs_export_rows(runs=runs)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(EXPORT_FIELDS)
        for row in rows:
            # Numbers are written as they are: a negative number is not a formula, and quoting it would make it text.
            writer.writerow([row[f] if isinstance(row[f], int | float) else csv_safe(row[f]) for f in EXPORT_FIELDS])
        content = out.getvalue()
    else:
        content = json.dumps(rows, ensure_ascii=False, indent=1)
    response = HttpResponse(content, content_type=FORMATS[fmt])
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="langrun-runs-{stamp}.{fmt}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
