"""The admin for flows and runs: diagrams, webhook URLs, "Run now", run details, replay and cancel, variables, versions.

Every change goes through flows.services, like the webhook and the API. Importing the modules registers their ModelAdmins.
"""

from flows.admin import flows, jobs, runs, schedules, variables, versions  # noqa: F401
