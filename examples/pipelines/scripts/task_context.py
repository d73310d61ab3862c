"""What an example task knows from its executor, and mlgraph's Python client to report with.

The executor gives every task MLGRAPH_URL (the GraphQL endpoint), a task-scoped MLGRAPH_TOKEN that
may write only to this attempt's run, MLGRAPH_RUN_ID, the task's params (MLGRAPH_PARAMS, JSON) and
the last checkpoint (MLGRAPH_CHECKPOINT). Reporting goes through the repository's stdlib client,
client/python/mlgraph_client.py, which reads MLGRAPH_URL and MLGRAPH_TOKEN itself.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "client", "python"))
from mlgraph_client import Client  # noqa: E402

RUN_ID = os.environ.get("MLGRAPH_RUN_ID", "")
client = Client()


def params():
    return json.loads(os.environ.get("MLGRAPH_PARAMS") or "{}")


def checkpoint():
    text = os.environ.get("MLGRAPH_CHECKPOINT") or ""
    return json.loads(text) if text else None


def log_params(values):
    client.log_params(RUN_ID, values)


def log_metrics(step, values):
    client.log_metrics(RUN_ID, [{"key": k, "value": float(v), "step": step} for k, v in values.items()])


def set_tags(values):
    client.set_tags(RUN_ID, values)


def upload_artifact(path, data):
    client.upload_artifact(RUN_ID, path, data)
