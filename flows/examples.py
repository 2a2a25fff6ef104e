"""The greeting flow: the demo `make run` installs, and the example in the API documentation."""

GREETING_GRAPH = {
    "nodes": [
        {"id": "hook", "type": "Webhook"},
        {"id": "greet", "type": "Template", "params": {"template": "Hello {name}!"}},
        {"id": "out", "type": "Output", "params": {"name": "greeting"}},
    ],
    "edges": [
        {"source": "hook", "target": "greet", "target_input": "data"},
        {"source": "greet", "target": "out", "target_input": "value"},
    ],
}
