"""mlgraph client for notebooks and scripts: Python standard library only (urllib, json, threading).

    from mlgraph_client import Client
    ml = Client()                      # MLGRAPH_URL / MLGRAPH_TOKEN, default http://127.0.0.1:4000/graphql
    run = ml.start_run("churn", name="baseline", params={"lr": 0.01})
    for step in range(100):
        run.log_metric("loss", 1 / (step + 1), step)   # buffered; a background thread flushes
    run.finish()                       # flushes, then marks the run FINISHED (a run left open is
                                       # finished at interpreter exit, FAILED after an uncaught error)
    ml.compare_runs([run.id, other.id], baseline=run.id)
    ml.register_model("churn", run_id=run.id, artifact_path="model")
    ml.set_alias("churn", "champion", 1)

Errors raise MlgraphError with .code (the server's extensions.code, or NETWORK_ERROR) and .field.
"""
from __future__ import annotations

import atexit
import collections
import http.client
import json
import math
import numbers
import operator
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional

__all__ = ["Client", "Run", "MlgraphError"]

RETRYABLE = {"NETWORK_ERROR", "UNAVAILABLE", "RATE_LIMITED"}
# The server's rule for metric keys (it refuses a whole batch for one bad point).
_METRIC_KEY = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,250}$")


class MlgraphError(Exception):
    """A failed request: code is the server's extensions.code (or NETWORK_ERROR); field names the input at fault."""

    def __init__(self, message: str, code: str, field: Optional[str] = None, errors: Optional[list] = None):
        super().__init__(message)
        self.code = code
        self.field = field
        self.errors = errors or []

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


class Client:
    """GraphQL over HTTP with urllib. `query` is the escape hatch for anything the helpers do not cover."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = 60.0):
        url = url or os.environ.get("MLGRAPH_URL") or "http://127.0.0.1:4000/graphql"
        if url.rstrip("/").count("/") == 2:  # a bare origin like http://host:4000
            url = url.rstrip("/") + "/graphql"
        self.url = url
        self.token = token if token is not None else os.environ.get("MLGRAPH_TOKEN")
        self.timeout = timeout

    # -- transport -------------------------------------------------------------------------
    def query(self, document: str, variables: Optional[Dict[str, Any]] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Sends a query or mutation; returns `data` or raises MlgraphError. `timeout` (seconds)
        overrides the client's for this request."""
        try:
            # allow_nan=False: NaN/Infinity are not JSON; the server would refuse the body.
            body = json.dumps({"query": document, "variables": variables or {}}, allow_nan=False, default=_json_default).encode("utf-8")
        except ValueError as e:
            raise MlgraphError("variables: %s (NaN and Infinity cannot be sent)" % e, "BAD_USER_INPUT", "variables") from e
        except TypeError as e:  # a value JSON has no form for (an array, an object)
            raise MlgraphError("variables: %s" % e, "BAD_USER_INPUT", "variables") from e
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.token:
            headers["authorization"] = "Bearer " + self.token
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout if timeout is None else timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:  # GraphQL errors may come with a 4xx/5xx status
            try:
                payload = json.loads(e.read().decode("utf-8"))
            except Exception:
                # Only a server-side status or 429 is worth retrying; any other 4xx (a wrong URL,
                # a refused body) would be answered the same again.
                code = "UNAVAILABLE" if e.code >= 500 else "RATE_LIMITED" if e.code == 429 else "BAD_REQUEST"
                raise MlgraphError("HTTP %d from %s" % (e.code, self.url), code) from e
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError) as e:
            # No whole answer: unreachable, cut off mid-body (IncompleteRead), or not JSON.
            raise MlgraphError("cannot reach %s: %s" % (self.url, getattr(e, "reason", e)), "NETWORK_ERROR") from e
        errors = payload.get("errors")
        if errors:
            ext = errors[0].get("extensions") or {}
            raise MlgraphError(errors[0].get("message", "error"), ext.get("code", "INTERNAL_SERVER_ERROR"), ext.get("field"), errors)
        return payload["data"]

    # -- tracking --------------------------------------------------------------------------
    def experiment(self, name: str, create: bool = True) -> Dict[str, Any]:
        """The experiment with this name, created when missing (unless create=False)."""
        found = self.query("query($n: String) { experiment(name: $n) { id name } }", {"n": name})["experiment"]
        if found or not create:
            return found
        try:
            return self.query("mutation($i: CreateExperimentInput!) { createExperiment(input: $i) { id name } }", {"i": {"name": name}})["createExperiment"]
        except MlgraphError as e:  # someone else created it meanwhile
            if e.code != "CONFLICT":
                raise
            return self.query("query($n: String) { experiment(name: $n) { id name } }", {"n": name})["experiment"]

    def start_run(self, experiment: str, name: Optional[str] = None, params: Optional[Dict[str, Any]] = None,
                  tags: Optional[Dict[str, str]] = None, **logger_options: Any) -> "Run":
        """Starts a run in the named experiment (created when missing); returns a Run with a buffered metric logger."""
        exp = _retrying(lambda: self.experiment(experiment))  # a lookup, or a create whose resend is CONFLICT, then a lookup
        # One key for the run, reused by every resend: a run whose answer was lost is not made twice.
        run_input = {"experimentId": exp["id"], "name": name, "params": _pairs(params), "tags": _pairs(tags), "idempotencyKey": str(uuid.uuid4())}
        data = _retrying(lambda: self.query("mutation($i: CreateRunInput!) { createRun(input: $i) { id name status } }", {"i": run_input}))["createRun"]
        return Run(self, data["id"], data["name"], **logger_options)

    def log_params(self, run_id: str, params: Dict[str, Any]) -> None:
        """Params are immutable: the same value again is fine, a different one raises CONFLICT."""
        self.query("mutation($r: ID!, $p: [ParamInput!]!) { logParams(runId: $r, params: $p) { id } }", {"r": run_id, "p": _pairs(params)})

    def set_tags(self, run_id: str, tags: Dict[str, str]) -> None:
        self.query("mutation($r: ID!, $t: [TagInput!]!) { setRunTags(runId: $r, tags: $t) { id } }", {"r": run_id, "t": _pairs(tags)})

    def finish_run(self, run_id: str, status: str = "FINISHED", timeout: Optional[float] = None) -> Dict[str, Any]:
        return self.query("mutation($i: UpdateRunInput!) { updateRun(input: $i) { id status endTime } }", {"i": {"runId": run_id, "status": status}}, timeout=timeout)["updateRun"]

    def log_metrics(self, run_id: str, points: List[Dict[str, Any]], idempotency_key: Optional[str] = None) -> Dict[str, Any]:
        """One unbuffered batch: points are {key, value, step[, timestamp]}. Prefer Run.log_metric in loops."""
        return self.query(
            "mutation($r: ID!, $p: [MetricPointInput!]!, $k: String) { logMetrics(runId: $r, points: $p, idempotencyKey: $k) { accepted deduplicated } }",
            {"r": run_id, "p": points, "k": idempotency_key},
        )["logMetrics"]

    def get_run(self, run_id: str) -> Optional[Dict[str, Any]]:
        return self.query(
            "query($id: ID!) { run(id: $id) { id name status startTime endTime params { key value } tags { key value }"
            " metrics { key summary { min max last lastStep count } } } }",
            {"id": run_id},
        )["run"]

    def metric_history(self, run_id: str, key: str, max_points: int = 1000) -> List[Dict[str, Any]]:
        run = self.query(
            "query($id: ID!, $k: String!, $m: Int!) { run(id: $id) { metric(key: $k) { history(maxPoints: $m) { step value timestamp } } } }",
            {"id": run_id, "k": key, "m": max_points},
        )["run"]
        return (run or {}).get("metric", {}).get("history", []) if run and run.get("metric") else []

    def search_runs(self, experiment: Optional[str] = None, filter: Optional[str] = None, order_by: Optional[List[str]] = None, first: int = 100) -> List[Dict[str, Any]]:
        ids = None
        if experiment:
            found = self.experiment(experiment, create=False)
            if found is None:
                raise MlgraphError("experiment %r not found" % (experiment,), "NOT_FOUND", "experiment")
            ids = [found["id"]]
        data = self.query(
            "query($e: [ID!], $f: String, $o: [String!], $n: Int) { runs(experimentIds: $e, filter: $f, orderBy: $o, first: $n) {"
            " edges { node { id name status params { key value } metrics { key summary { last } } } } } }",
            {"e": ids, "f": filter, "o": order_by, "n": first},
        )
        return [e["node"] for e in data["runs"]["edges"]]

    def compare_runs(self, run_ids: List[str], metric_keys: Optional[List[str]] = None, baseline: Optional[str] = None) -> Dict[str, Any]:
        """The seed's comparison flow: per run and metric min/max/last, diff to a baseline, differing params."""
        return self.query(
            "query($ids: [ID!]!, $k: [String!], $b: ID) { compareRuns(runIds: $ids, metricKeys: $k, baselineRunId: $b) {"
            " metricKeys differingParams runs { id name params { key value } }"
            " rows { run { id name } metrics { key diffFromBaseline summary { min max last count } } } } }",
            {"ids": run_ids, "k": metric_keys, "b": baseline},
        )["compareRuns"]

    # -- artifacts and registry ------------------------------------------------------------
    def upload_artifact(self, run_id: str, path: str, content: bytes, content_type: str = "application/octet-stream") -> Dict[str, Any]:
        """Uploads bytes as one artifact file (single PUT or multipart, as the server says); the server verifies SHA-256."""
        import hashlib

        upload = self.query(
            "mutation($i: ArtifactUploadInput!) { createArtifactUpload(input: $i) { id kind url partSize parts { partNumber size url } headers { name value } } }",
            {"i": {"runId": run_id, "path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "contentType": content_type}},
        )["createArtifactUpload"]
        headers = {h["name"]: h["value"] for h in upload["headers"]}
        parts = None
        if upload["kind"] == "SINGLE":
            _put(upload["url"], content, headers)
        else:
            parts = []
            for part in upload["parts"]:
                start = (part["partNumber"] - 1) * upload["partSize"]
                parts.append({"partNumber": part["partNumber"], "etag": _put(part["url"], content[start:start + part["size"]], headers)})
        return self.query(
            "mutation($u: ID!, $p: [UploadedPartInput!]) { completeArtifactUpload(uploadId: $u, parts: $p) { path size sha256 } }",
            {"u": upload["id"], "p": parts},
        )["completeArtifactUpload"]

    def register_model(self, name: str, run_id: str, artifact_path: str, description: Optional[str] = None, model_card: Optional[str] = None) -> Dict[str, Any]:
        """Registers a run's artifact as a new version of `name` (the model is created when new).
        A failure worth retrying is resent a few times with the same idempotency key: one version."""
        try:
            _retrying(lambda: self.query("mutation($i: CreateRegisteredModelInput!) { createRegisteredModel(input: $i) { name } }", {"i": {"name": name}}))
        except MlgraphError as e:
            if e.code != "CONFLICT":  # made by someone else, or by a send whose answer was lost
                raise
        version_input = {"modelName": name, "runId": run_id, "artifactPath": artifact_path, "description": description, "modelCard": model_card,
                         "idempotencyKey": str(uuid.uuid4())}
        return _retrying(lambda: self.query(
            "mutation($i: CreateModelVersionInput!) { createModelVersion(input: $i) { version stage aliases artifactUri } }", {"i": version_input},
        ))["createModelVersion"]

    def set_alias(self, name: str, alias: str, version: int) -> Dict[str, Any]:
        return self.query(
            "mutation($n: String!, $a: String!, $v: Int!) { setModelAlias(modelName: $n, alias: $a, version: $v) { version aliases } }",
            {"n": name, "a": alias, "v": version},
        )["setModelAlias"]

    def model_version(self, name: str, version: Optional[int] = None, alias: Optional[str] = None) -> Optional[Dict[str, Any]]:
        return self.query(
            "query($n: String!, $v: Int, $a: String) { modelVersion(name: $n, version: $v, alias: $a) { version stage aliases artifactUri run { id } } }",
            {"n": name, "v": version, "a": alias},
        )["modelVersion"]


class Run:
    """A run with a buffered metric logger: log_metric appends to memory; a daemon thread flushes by size and time.

    A run still open when the interpreter exits (a script that never called finish()) is flushed and
    finished by an atexit hook, FAILED when the exit is an uncaught exception, waiting at most
    `exit_timeout` seconds for a server that is down (the points left are reported on stderr)."""

    def __init__(self, client: Client, run_id: str, name: str, batch_size: int = 500, flush_interval: float = 1.0, max_buffered: int = 1_000_000,
                 exit_timeout: float = 10.0):
        self.client = client
        self.id = run_id
        self.name = name
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        # deque(maxlen): appending to a full buffer drops the oldest point in O(1). `del list[0]` on
        # a million points moved them all on every log_metric during an outage (~30x slower).
        self._buffer: "collections.deque[Dict[str, Any]]" = collections.deque(maxlen=max_buffered)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._closed = False
        # finish() was called (later log_metric calls raise, later finish() calls do nothing), and
        # what ending the run answered (None until the server confirmed it).
        self._finishing: Optional[str] = None
        self._ended: Optional[Dict[str, Any]] = None
        self._exit_timeout = exit_timeout
        self.dropped = 0
        self.rejected = 0
        self.errors: List[MlgraphError] = []
        self._flush_interval = flush_interval
        self._thread = threading.Thread(target=self._flusher, name="mlgraph-metrics-%s" % run_id[:8], daemon=True)
        self._thread.start()
        self._pid = os.getpid()  # a forked child's exit must not end its parent's run
        with _open_runs_lock:
            _open_runs.add(self)

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        """Buffers one point; never waits on the network. Raises ValueError for a point the server
        would refuse (it refuses a whole batch for one bad point): a key outside 1-250 of letters,
        digits, _ . - / and spaces, a step that is not a whole number >= 0. A non-finite value
        (NaN, inf) is skipped and counted in `rejected`. Raises MlgraphError (CONFLICT) once the
        run was finished: the point could never be sent."""
        if self._finishing is not None:
            raise MlgraphError("log_metric(%r): run %s was already finished; start a new run" % (key, self.id), "CONFLICT", "run")
        value = float(value)
        if not math.isfinite(value):
            # A diverging loss is data, not a bug: counted (like the TypeScript logger), not raised.
            with self._lock:
                self.rejected += 1
            return
        if not isinstance(key, str) or not _METRIC_KEY.fullmatch(key):
            raise ValueError("log_metric(%r): a metric key is 1 to 250 of letters, digits, _ . - / and spaces" % (key,))
        step = _whole_step(key, step)
        point = {"key": key, "value": value, "step": step, "timestamp": _now_iso()}
        with self._lock:
            if len(self._buffer) == self._max_buffered:  # a long outage: the deque drops the oldest
                self.dropped += 1
            self._buffer.append(point)
            if len(self._buffer) >= self._batch_size:
                self._wake.set()

    def log_metrics(self, values: Dict[str, float], step: int = 0) -> None:
        for key, value in values.items():
            self.log_metric(key, value, step)

    def log_params(self, params: Dict[str, Any]) -> None:
        self.client.log_params(self.id, params)

    def set_tags(self, tags: Dict[str, str]) -> None:
        self.client.set_tags(self.id, tags)

    def flush(self, timeout: float = 300.0) -> None:
        """Blocks until every point logged so far was sent; raises the first refused batch's error
        since the last flush (once: a later flush does not raise it again)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._lock:
            while self._buffer or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MlgraphError("metrics not delivered within %.0f s" % timeout, "UNAVAILABLE")
                self._wake.set()
                self._idle.wait(min(remaining, 0.5))
        if self.errors:
            first, self.errors = self.errors[0], []
            raise first

    def finish(self, status: str = "FINISHED") -> Dict[str, Any]:
        """Flushes the metrics, stops the flusher and ends the run. The run is ended even when the
        flush fails (a refused batch, an outage past the timeout); that error is raised after.
        Once called, later calls do not change the run: they return what the first one got (a
        `finish("FAILED")` from `__exit__` after an explicit finish() must not turn FINISHED into
        FAILED), or, if the server did not confirm the end then, retry ending it with the first
        call's status."""
        return self._finish(status, flush_timeout=300.0, request_timeout=None, join_timeout=5.0)

    def _finish(self, status: str, flush_timeout: float, request_timeout: Optional[float], join_timeout: float) -> Dict[str, Any]:
        with self._lock:
            first_call = self._finishing is None
            if first_call:
                self._finishing = status
            elif self._ended is None and status == "FAILED":
                # The first call never got the run ended (Ctrl-C during its flush, an outage):
                # a failure reported since (by __exit__) is what the run's end should say.
                self._finishing = status
        if not first_call:
            if self._ended is None:
                self._ended = self.client.finish_run(self.id, self._finishing or status, timeout=request_timeout)
                self._forget()
            return self._ended
        flush_error: Optional[BaseException] = None
        try:
            self.flush(flush_timeout)
        except MlgraphError as e:
            flush_error = e
        finally:
            self._closed = True
            self._wake.set()
            self._thread.join(timeout=join_timeout)
        # Still an open run until the server confirmed its end: the atexit hook tries again.
        self._ended = self.client.finish_run(self.id, self._finishing or status, timeout=request_timeout)
        self._forget()
        if flush_error is not None:
            raise flush_error
        return self._ended

    def _forget(self) -> None:
        with _open_runs_lock:
            _open_runs.discard(self)

    def _finish_at_exit(self, status: str, deadline: float, reports: Dict[str, str]) -> None:
        """The atexit path: bounded by `deadline` however the server behaves; never raises. What
        went wrong goes into `reports` for the main thread to print: this runs on a daemon thread,
        and one still writing to stderr while the interpreter shuts down aborts the process
        ("could not acquire lock for <stderr> at interpreter shutdown")."""
        try:
            flush_timeout = max(0.0, deadline - time.monotonic())
            # The request that ends the run gets half a second at least, even after a flush that
            # used up the time: a server that is up answers it at once, one that is down refuses it.
            self._finish(status, flush_timeout=flush_timeout, request_timeout=max(0.5, deadline - time.monotonic()), join_timeout=0.1)
        except Exception as e:  # noqa: BLE001 - whatever went wrong, exit goes on
            with self._lock:
                unsent = len(self._buffer) + self._in_flight
            reports[self.id] = "mlgraph: at exit, run %s: %s%s\n" % (self.id, e, "; %d metric points not delivered" % unsent if unsent else "")

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("FINISHED")
            return
        # The block's own exception is the one to see: a failure to flush or end the run on the
        # way out must not replace it.
        try:
            self.finish("FAILED")
        except Exception:
            pass

    def _flusher(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            while True:
                with self._lock:
                    popleft = self._buffer.popleft
                    batch = [popleft() for _ in range(min(len(self._buffer), 10_000))]
                    self._in_flight = len(batch)
                if not batch:
                    break
                self._send(batch)
                with self._lock:
                    self._in_flight = 0
                    self._idle.notify_all()
            with self._lock:
                self._idle.notify_all()
                if self._closed and not self._buffer:
                    return

    def _send(self, batch: List[Dict[str, Any]]) -> None:
        key = str(uuid.uuid4())  # once per batch, reused by every retry: the server stores it once
        delay = 0.1
        unexpected = 0
        while True:
            try:
                self.client.log_metrics(self.id, batch, idempotency_key=key)
                return
            except MlgraphError as e:
                # INTERNAL_SERVER_ERROR may pass too; the key makes a few resends safe.
                if not e.retryable and not (e.code == "INTERNAL_SERVER_ERROR" and unexpected < 2):
                    self.errors.append(e)
                    return
                if not e.retryable:
                    unexpected += 1
            except Exception as e:  # never let the flusher thread die: its buffer would never be sent
                unexpected += 1
                if unexpected >= 3:
                    self.errors.append(MlgraphError("sending metrics failed: %r" % (e,), "INTERNAL_SERVER_ERROR"))
                    return
            delay = _backoff(delay)


# Runs not ended yet (until the server confirmed it), ended by the atexit hook below. Strong
# references cost nothing extra: each open run's flusher thread holds it anyway until finish().
_open_runs: "set[Run]" = set()
_open_runs_lock = threading.Lock()

# Whether the script is ending by an uncaught exception: sys.excepthook runs before exit handlers.
# (Not sys.last_type: IPython sets it for every traceback it shows, even a typo in an old cell.)
_uncaught_exception = False
_previous_excepthook = sys.excepthook


def _note_uncaught_exception(exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
    global _uncaught_exception
    _uncaught_exception = True
    _previous_excepthook(exc_type, exc, tb)


sys.excepthook = _note_uncaught_exception


def _finish_open_runs() -> None:
    """atexit: flush and end every run the script left open (MLflow ends its active run at exit
    too), so the last points are not lost with the daemon flusher thread; FAILED when the script
    ends by an uncaught exception. The runs are ended side by side under one deadline: a server
    that is down delays the exit by about the longest exit_timeout, however many runs are open;
    those still not ended then are reported on stderr."""
    with _open_runs_lock:
        runs = [run for run in _open_runs if run._pid == os.getpid()]
    if not runs:
        return
    status = "FAILED" if _uncaught_exception else "FINISHED"
    deadline = time.monotonic() + max(run._exit_timeout for run in runs)
    reports: Dict[str, str] = {}
    threads = [threading.Thread(target=run._finish_at_exit, args=(status, deadline, reports), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for run, thread in zip(runs, threads):
        thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if thread.is_alive():
            sys.stderr.write("mlgraph: at exit, run %s was not ended: the server did not answer in time\n" % run.id)
        elif run.id in reports:
            sys.stderr.write(reports[run.id])


atexit.register(_finish_open_runs)


def _backoff(delay: float) -> float:
    """Sleeps about `delay` seconds (half to all of it at random, so clients failing together do not
    resend together) and returns the next delay: doubled, at most 5 s."""
    time.sleep(delay / 2 + random.random() * delay / 2)
    return min(delay * 2, 5.0)


_CREATE_ATTEMPTS = 5


def _retrying(send: Callable[[], Any]) -> Any:
    """Calls send(), again after a failure worth retrying (with backoff), up to _CREATE_ATTEMPTS
    times. For creates that carry an idempotency key (or whose resend is refused CONFLICT): a
    resend after a lost answer must not make a second object."""
    delay = 0.1
    for attempt in range(1, _CREATE_ATTEMPTS + 1):
        try:
            return send()
        except MlgraphError as e:
            if not e.retryable or attempt == _CREATE_ATTEMPTS:
                raise
        delay = _backoff(delay)
    raise AssertionError("unreachable")


def _json_default(value: Any) -> Any:
    """numpy scalars (np.float32, np.int64, ...) are not JSON; `.item()` gives the Python number.
    Anything else (an array, an object) stays refused: TypeError, reported as BAD_USER_INPUT."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


def _pairs(values: Optional[Dict[str, Any]]) -> Optional[List[Dict[str, str]]]:
    if values is None:
        return None
    return [{"key": str(k), "value": str(v)} for k, v in values.items()]


def _whole_step(key: str, step: Any) -> int:
    """The step as an int (numpy integers and whole floats of any width included), or ValueError."""
    if isinstance(step, bool):
        raise ValueError("log_metric(%r): step %r is not a whole number from 0 to 2^53-1" % (key, step))
    try:
        whole = operator.index(step)
    except TypeError:
        # np.float64 is a float subclass but np.float32 is not: both are numbers.Real, and a
        # narrower float converts to a Python float exactly.
        as_float = float(step) if isinstance(step, numbers.Real) else None
        if as_float is not None and as_float.is_integer():
            whole = int(as_float)
        else:
            raise ValueError("log_metric(%r): step %r is not a whole number from 0 to 2^53-1" % (key, step)) from None
    if not 0 <= whole <= 2**53 - 1:
        raise ValueError("log_metric(%r): step %r is not a whole number from 0 to 2^53-1" % (key, step))
    return whole


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


_PUT_RETRIES = 3


def _put(url: str, content: bytes, headers: Dict[str, str]) -> str:
    """PUTs bytes, retrying a dropped connection or a 5xx up to 3 times with backoff (a part PUT is
    idempotent: the same bytes to the same URL), as the TypeScript client does. A 4xx is final."""
    for attempt in range(_PUT_RETRIES + 1):
        request = urllib.request.Request(url, data=content, headers=dict(headers, **{"content-length": str(len(content))}), method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.headers.get("etag", "")
        except urllib.error.HTTPError as e:
            error = MlgraphError("upload PUT answered HTTP %d: %s" % (e.code, e.read()[:200]), "UNAVAILABLE" if e.code >= 500 else "BAD_USER_INPUT")
            if e.code < 500 or attempt == _PUT_RETRIES:
                raise error from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if attempt == _PUT_RETRIES:
                raise MlgraphError("upload PUT failed: %s" % getattr(e, "reason", e), "NETWORK_ERROR") from e
        time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")
