#!/usr/bin/env python3
"""The seed's flows from a notebook, with the standard-library client (client/python/mlgraph_client.py).

Run against a live server:   MLGRAPH_URL=http://127.0.0.1:4000/graphql python3 examples/notebook.py
It asserts its results and exits non-zero when one does not hold. examples/notebook.ipynb has the
same cells for Jupyter.
"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "client", "python"))
from mlgraph_client import Client, MlgraphError  # noqa: E402

# %% 1. Connect (MLGRAPH_URL / MLGRAPH_TOKEN)
ml = Client()
suffix = os.environ.get("NOTEBOOK_SUFFIX") or time.strftime("%Y%m%d-%H%M%S")
experiment = "churn-notebook-" + suffix
model_name = "churn-nb-" + suffix
print("server:", ml.url)

# %% 2. Training runs: params, buffered metrics (a background thread flushes), finish
results = {}
for lr in (0.1, 0.01):
    run = ml.start_run(experiment, name="lr-%s" % lr, params={"lr": lr, "epochs": 20}, tags={"team": "notebooks"})
    for step in range(20):
        loss = math.exp(-lr * 10 * (step + 1)) + 0.05
        run.log_metrics({"loss": loss, "accuracy": 1 - loss}, step=step)
    run.finish()
    results[lr] = run.id
    print("run", run.name, run.id, "finished")

# %% 3. Inspect a run: params are immutable, summaries come from the metric store
detail = ml.get_run(results[0.1])
summary = {m["key"]: m["summary"] for m in detail["metrics"]}
assert detail["status"] == "FINISHED", detail["status"]
assert summary["loss"]["count"] == 20, summary
assert abs(summary["loss"]["last"] - (math.exp(-0.1 * 10 * 20) + 0.05)) < 1e-9, summary
try:
    ml.log_params(results[0.1], {"lr": 0.5})
    raise AssertionError("changing a param must be refused")
except MlgraphError as e:
    assert e.code == "CONFLICT" and e.field == "params[0].value", (e.code, e.field)
print("loss summary of lr=0.1:", summary["loss"])

# %% 4. The seed's comparison flow: min/max/last per run, diffs to a baseline, params that differ
comparison = ml.compare_runs([results[0.01], results[0.1]], metric_keys=["loss"], baseline=results[0.01])
assert comparison["differingParams"] == ["lr"], comparison["differingParams"]
rows = {r["run"]["id"]: r["metrics"][0] for r in comparison["rows"]}
best = min(rows, key=lambda rid: rows[rid]["summary"]["last"])
assert best == results[0.1], "lr=0.1 converges faster in this toy loss"
assert rows[results[0.1]]["diffFromBaseline"] < 0
for rid, m in rows.items():
    print("compare", rid, "last loss %.4f" % m["summary"]["last"], "diff", m["diffFromBaseline"])

# %% 5. Search runs with the filter language
found = ml.search_runs(experiment, filter="metrics.loss < 0.1 and params.lr = '0.1'")
assert [r["id"] for r in found] == [results[0.1]], found
print("search found", [r["name"] for r in found])

# %% 6. Registration and promotion flow: upload the model, register it, move aliases
ml.upload_artifact(best, "model/model.txt", b"weights of the best run\n", "text/plain")
v1 = ml.register_model(model_name, run_id=best, artifact_path="model", description="best lr from the notebook")
assert v1["version"] == 1, v1
ml.set_alias(model_name, "candidate", 1)
ml.set_alias(model_name, "champion", 1)
champion = ml.model_version(model_name, alias="champion")
assert champion["version"] == 1 and champion["run"]["id"] == best, champion
assert sorted(champion["aliases"]) == ["candidate", "champion"], champion["aliases"]
print("registered %s v%d, @champion -> v%d" % (model_name, v1["version"], champion["version"]))

print("notebook OK")
