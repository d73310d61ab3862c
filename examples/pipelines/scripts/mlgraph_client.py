"""Tiny stdlib-only client the example tasks use to report to mlgraph.

The executor gives every task MLGRAPH_URL (the GraphQL endpoint), a task-scoped MLGRAPH_TOKEN that
may write only to this attempt's run, MLGRAPH_RUN_ID and the task's params (MLGRAPH_PARAMS, JSON).
"""
import hashlib
import json
import os
import urllib.parse
import urllib.request

URL = os.environ.get("MLGRAPH_URL", "http://127.0.0.1:4000/graphql")
TOKEN = os.environ.get("MLGRAPH_TOKEN", "")
RUN_ID = os.environ.get("MLGRAPH_RUN_ID", "")


def params():
    return json.loads(os.environ.get("MLGRAPH_PARAMS") or "{}")


def checkpoint():
    text = os.environ.get("MLGRAPH_CHECKPOINT") or ""
    return json.loads(text) if text else None


def gql(query, variables=None):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    headers = {"content-type": "application/json"}
    if TOKEN:
        headers["authorization"] = "Bearer " + TOKEN
    req = urllib.request.Request(URL, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as res:
        answer = json.loads(res.read())
    if answer.get("errors"):
        raise RuntimeError(answer["errors"][0]["message"])
    return answer["data"]


def _text(value):
    return value if isinstance(value, str) else json.dumps(value)


def log_params(values):
    gql(
        "mutation($run: ID!, $p: [ParamInput!]!) { logParams(runId: $run, params: $p) { id } }",
        {"run": RUN_ID, "p": [{"key": k, "value": _text(v)} for k, v in values.items()]},
    )


def log_metrics(step, values):
    points = [{"key": k, "value": float(v), "step": step} for k, v in values.items()]
    gql(
        "mutation($run: ID!, $p: [MetricPointInput!]!) { logMetrics(runId: $run, points: $p) { accepted } }",
        {"run": RUN_ID, "p": points},
    )


def set_tags(values):
    gql(
        "mutation($run: ID!, $t: [TagInput!]!) { setRunTags(runId: $run, tags: $t) { id } }",
        {"run": RUN_ID, "t": [{"key": k, "value": str(v)} for k, v in values.items()]},
    )


def upload_artifact(path, data):
    """Uploads bytes as an artifact of this run (single PUT to the presigned URL, then complete)."""
    upload = gql(
        "mutation($i: ArtifactUploadInput!) { createArtifactUpload(input: $i) { id kind url headers { name value } } }",
        {"i": {"runId": RUN_ID, "path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
    )["createArtifactUpload"]
    target = urllib.parse.urljoin(URL, upload["url"])
    parsed, server = urllib.parse.urlparse(target), urllib.parse.urlparse(URL)
    if parsed.port == 0:  # a server listening on port 0 may not know its public port
        target = parsed._replace(netloc=server.netloc).geturl()
    headers = {h["name"]: h["value"] for h in upload["headers"]}
    req = urllib.request.Request(target, data=data, headers=headers, method="PUT")
    urllib.request.urlopen(req, timeout=60).read()
    gql("mutation($id: ID!) { completeArtifactUpload(uploadId: $id) { path } }", {"id": upload["id"]})
