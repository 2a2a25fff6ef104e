"""Flow and run services: the one place where flows are saved and runs are created, executed and swept.

The webhook, the REST API, the admin and the worker all call these functions; import each from its module.
"""
