import { createHash } from "node:crypto";
import pg from "pg";
import { collect, ok, probeUntil, sleep, startTestServer, type TestServer, uploadArtifact, waitFor } from "../helpers/test-server";
import { startWebhookReceiver } from "../helpers/webhook-receiver";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const SECRET = "serving-webhook-secret-0001";

async function newRun(server: TestServer, token: string | undefined, experimentName: string, extra: Record<string, unknown> = {}): Promise<string> {
  let exp = ok(await server.gql(`query($n: String!) { experiment(name: $n) { id } }`, { n: experimentName }, token)).experiment;
  if (!exp) exp = ok(await server.gql(`mutation($n: String!) { createExperiment(input: {name: $n}) { id } }`, { n: experimentName }, token)).createExperiment;
  return ok(await server.gql(`mutation($i: CreateRunInput!) { createRun(input: $i) { id } }`, { i: { experimentId: exp.id, ...extra } }, token)).createRun.id;
}

const CARD = "# Churn model\n\n## Intended use\nScoring churn risk.\n\n## Limitations\nNot for credit decisions.\n\n## Fairness\nGap 0.03 across regions.\n";
const VERSION_FIELDS = `version stage aliases artifactUri run { id }`;

describe("model registry: the seed's promotion flow with approvals and a signed webhook", () => {
  let server: TestServer;
  let admin: string;
  let editor: string;
  let viewer: string;
  beforeAll(async () => {
    server = await startTestServer({ env: { MLGRAPH_AUTH: "required" } });
    admin = /MLGRAPH_TOKEN=(\S+)/.exec(server.output())![1];
    const mk = async (role: string) => ok(await server.gql(`mutation($r: String!) { createApiToken(input: {name: $r, role: $r}) { secret } }`, { r: role }, admin)).createApiToken.secret as string;
    editor = await mk("editor");
    viewer = await mk("viewer");
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("registers, aliases @candidate, requests Production, checks the card and thresholds, approves, archives the old champion and notifies serving", async () => {
    const receiver = await startWebhookReceiver(SECRET);
    try {
      ok(await server.gql(`mutation { createRegisteredModel(input: {name: "churn", description: "churn risk", tags: [{key: "team", value: "growth"}]}) { name } }`, {}, editor));
      ok(await server.gql(`mutation($i: CreateWebhookInput!) { createWebhook(input: $i) { id } }`, { i: { url: receiver.url, events: ["STAGE_TRANSITION_APPROVED", "ALIAS_SET", "MODEL_VERSION_CREATED"], secret: SECRET, modelName: "churn" } }, admin));
      ok(
        await server.gql(
          `mutation($p: ApprovalPolicyInput!) { setApprovalPolicy(modelName: "churn", policy: $p) { approvalPolicy { requiredModelCardSections metricThresholds appliesToStages } } }`,
          { p: { requiredModelCardSections: ["Intended use", "Limitations", "Fairness"], metricThresholds: ["params.fairness_reviewed = 'yes'", "metrics.fairness_gap <= 0.05"] } },
          admin,
        ),
      );

      const versions: number[] = [];
      for (const gap of [0.04, 0.03]) {
        const runId = await newRun(server, editor, "churn-training", { params: [{ key: "fairness_reviewed", value: "yes" }] });
        ok(await server.gql(`mutation($r: ID!, $v: Float!) { logMetrics(runId: $r, points: [{key: "fairness_gap", value: $v}]) { accepted } }`, { r: runId, v: gap }, editor));
        await uploadArtifact(server, runId, "model/model.onnx", Buffer.from(`weights ${gap}`), editor);
        const v = ok(await server.gql(`mutation($r: ID!, $c: String) { createModelVersion(input: {modelName: "churn", runId: $r, artifactPath: "model", modelCard: $c}) { ${VERSION_FIELDS} } }`, { r: runId, c: CARD }, editor)).createModelVersion;
        expect(v).toMatchObject({ stage: "NONE", aliases: [], artifactUri: `runs:/${runId}/model`, run: { id: runId } });
        versions.push(v.version);
      }
      expect(versions).toEqual([1, 2]);

      const promote = async (version: number) => {
        const req = ok(await server.gql(`mutation($v: Int!) { requestStageTransition(input: {modelName: "churn", version: $v, toStage: PRODUCTION, comment: "ship it"}) { id status requestedBy checks { name passed detail } } }`, { v: version }, editor)).requestStageTransition;
        expect(req.status).toBe("PENDING");
        expect(req.checks.length).toBe(6);
        expect(req.checks.filter((c: any) => !c.passed)).toEqual([]);
        // The requester may not approve their own request; an editor is not an approver by default.
        const selfApprove = await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status } }`, { id: req.id }, editor);
        expect(selfApprove.errors?.[0].extensions?.code).toBe("FORBIDDEN");
        return ok(await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id, comment: "checks green") { status decidedBy decisionComment modelVersion { version stage aliases } } }`, { id: req.id }, admin)).approveStageTransition;
      };

      ok(await server.gql(`mutation { setModelAlias(modelName: "churn", alias: "@candidate", version: 1) { version } }`, {}, editor));
      expect(await promote(1)).toMatchObject({ status: "APPROVED", decidedBy: "bootstrap-admin", decisionComment: "checks green", modelVersion: { version: 1, stage: "PRODUCTION", aliases: ["candidate", "champion"] } });
      ok(await server.gql(`mutation { setModelAlias(modelName: "churn", alias: "candidate", version: 2) { version } }`, {}, editor));
      expect(await promote(2)).toMatchObject({ modelVersion: { version: 2, stage: "PRODUCTION", aliases: ["candidate", "champion"] } });

      const model = ok(await server.gql(`{ registeredModel(name: "churn") { aliases { alias version } versions { edges { node { version stage } } } latestVersion { version } tags { key value } } }`, {}, viewer)).registeredModel;
      expect(model.aliases).toEqual([{ alias: "candidate", version: 2 }, { alias: "champion", version: 2 }]);
      expect(model.versions.edges.map((e: any) => e.node)).toEqual([{ version: 2, stage: "PRODUCTION" }, { version: 1, stage: "ARCHIVED" }]);
      expect(model.latestVersion.version).toBe(2);

      // An editor may move other aliases but not @champion: that would skip the approval policy.
      for (const [mutation, alias] of [[`setModelAlias(modelName: "churn", alias: $a, version: 1) { version }`, "@champion"], [`deleteModelAlias(modelName: "churn", alias: $a)`, "champion"]]) {
        const refused = await server.gql(`mutation($a: String!) { ${mutation} }`, { a: alias }, editor);
        expect(refused.errors?.[0].extensions).toMatchObject({ code: "FORBIDDEN", field: "alias" });
        expect(refused.errors?.[0].message).toMatch(/approved Production transition/);
      }
      expect(ok(await server.gql(`{ registeredModel(name: "churn") { aliases { alias version } } }`, {}, viewer)).registeredModel.aliases).toEqual(model.aliases);

      // Serving: notified, then fetches @champion and downloads its artifact.
      await receiver.waitFor((r) => r.filter((x) => x.event === "STAGE_TRANSITION_APPROVED").length === 2);
      expect(receiver.received.every((r) => r.verified)).toBe(true);
      const approvals = receiver.received.filter((r) => r.event === "STAGE_TRANSITION_APPROVED").map((r) => r.body.data);
      expect(approvals[1]).toMatchObject({ modelName: "churn", version: 2, toStage: "PRODUCTION", archivedVersions: [1] });
      expect(receiver.received.filter((r) => r.event === "MODEL_VERSION_CREATED")).toHaveLength(2);
      const champion = ok(await server.gql(`{ modelVersion(name: "churn", alias: "@champion") { version run { artifacts(path: "model") { name downloadUrl } } } }`, {}, viewer)).modelVersion;
      expect(champion.version).toBe(2);
      const res = await fetch(champion.run.artifacts[0].downloadUrl);
      expect(await res.text()).toBe("weights 0.03");
    } finally {
      await receiver.close();
    }
  });

  it("stores failing checks and refuses to approve; a rejection records who and why", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "fraud"}) { name } }`, {}, editor));
    ok(await server.gql(`mutation { setApprovalPolicy(modelName: "fraud", policy: {requiredModelCardSections: ["Fairness"], metricThresholds: ["metrics.fairness_gap <= 0.05"]}) { name } }`, {}, admin));
    const runId = await newRun(server, editor, "fraud-training");
    ok(await server.gql(`mutation($r: ID!) { logMetrics(runId: $r, points: [{key: "fairness_gap", value: 0.09}]) { accepted } }`, { r: runId }, editor));
    await uploadArtifact(server, runId, "model.pkl", Buffer.from("pickle"), editor);
    ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "fraud", runId: $r, artifactPath: "model.pkl", modelCard: "# Fraud\\n\\n## Fairness\\n"}) { version } }`, { r: runId }, editor));
    const req = ok(await server.gql(`mutation { requestStageTransition(input: {modelName: "fraud", version: 1, toStage: PRODUCTION}) { id checks { name passed detail } } }`, {}, editor)).requestStageTransition;
    const byName = Object.fromEntries(req.checks.map((c: any) => [c.name, c]));
    expect(byName["model card present"].passed).toBe(true);
    expect(byName['model card section "Fairness"'].passed).toBe(false); // heading without text
    expect(byName["threshold metrics.fairness_gap <= 0.05"]).toMatchObject({ passed: false });
    const refused = await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status } }`, { id: req.id }, admin);
    expect(refused.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "requestId" });
    expect(ok(await server.gql(`{ modelVersion(name: "fraud", version: 1) { stage } }`, {}, viewer)).modelVersion.stage).toBe("NONE");

    const noReason = await server.gql(`mutation($id: ID!) { rejectStageTransition(requestId: $id) { status } }`, { id: req.id }, admin);
    expect(noReason.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "comment" });
    const rejected = ok(await server.gql(`mutation($id: ID!) { rejectStageTransition(requestId: $id, comment: "fairness gap too large") { status decidedBy decisionComment decidedAt } }`, { id: req.id }, admin)).rejectStageTransition;
    expect(rejected).toMatchObject({ status: "REJECTED", decidedBy: "bootstrap-admin", decisionComment: "fairness gap too large" });
    const again = await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status } }`, { id: req.id }, admin);
    expect(again.errors?.[0].extensions?.code).toBe("CONFLICT");
  });

  it("checks the policy again at approval: a threshold added after the request refuses it, and the approved request keeps the checks it passed", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "recheck"}) { name } }`, {}, editor));
    const runId = await newRun(server, editor, "recheck-training");
    ok(await server.gql(`mutation($r: ID!) { logMetrics(runId: $r, points: [{key: "auc", value: 0.71}]) { accepted } }`, { r: runId }, editor));
    await uploadArtifact(server, runId, "model.pkl", Buffer.from("pickle"), editor);
    ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "recheck", runId: $r, artifactPath: "model.pkl", modelCard: "# Recheck"}) { version } }`, { r: runId }, editor));
    const req = ok(await server.gql(`mutation { requestStageTransition(input: {modelName: "recheck", version: 1, toStage: PRODUCTION}) { id checks { name passed } } }`, {}, editor)).requestStageTransition;
    expect(req.checks).toEqual([{ name: "model card present", passed: true }]);

    ok(await server.gql(`mutation { setApprovalPolicy(modelName: "recheck", policy: {metricThresholds: ["metrics.auc >= 0.8"]}) { name } }`, {}, admin));
    const refused = await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status } }`, { id: req.id }, admin);
    expect(refused.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "requestId" });
    expect(refused.errors?.[0].message).toMatch(/threshold metrics\.auc >= 0\.8/);
    expect(ok(await server.gql(`{ modelVersion(name: "recheck", version: 1) { stage aliases } }`, {}, viewer)).modelVersion).toEqual({ stage: "NONE", aliases: [] });

    ok(await server.gql(`mutation($r: ID!) { logMetrics(runId: $r, points: [{key: "auc", value: 0.83, step: 1}]) { accepted } }`, { r: runId }, editor));
    const approved = ok(await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status checks { name passed } modelVersion { stage aliases } } }`, { id: req.id }, admin)).approveStageTransition;
    expect(approved).toEqual({
      status: "APPROVED",
      checks: [{ name: "model card present", passed: true }, { name: "threshold metrics.auc >= 0.8", passed: true }],
      modelVersion: { stage: "PRODUCTION", aliases: ["champion"] },
    });
  });

  it("createModelVersion on a missing artifact fails clearly and creates nothing", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "empty"}) { name } }`, {}, editor));
    const runId = await newRun(server, editor, "empty-training");
    for (const artifactPath of ["model", "model/missing.onnx"]) {
      const res = await server.gql(`mutation($r: ID!, $p: String!) { createModelVersion(input: {modelName: "empty", runId: $r, artifactPath: $p}) { version } }`, { r: runId, p: artifactPath }, editor);
      expect(res.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "input.artifactPath" });
      expect(res.errors?.[0].message).toMatch(/has no artifact/);
    }
    const traversal = await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "empty", runId: $r, artifactPath: "../other-run/model"}) { version } }`, { r: runId }, editor);
    expect(traversal.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.artifactPath" });
    const model = ok(await server.gql(`{ registeredModel(name: "empty") { versions { totalCount edges { node { version } } } latestVersion { version } } }`, {}, viewer)).registeredModel;
    expect(model.versions.edges).toEqual([]);
    expect(model.latestVersion).toBeNull();
    // And the next successful registration is still version 1: nothing was consumed.
    await uploadArtifact(server, runId, "model/ok.onnx", Buffer.from("ok"), editor);
    expect(ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "empty", runId: $r, artifactPath: "model"}) { version } }`, { r: runId }, editor)).createModelVersion.version).toBe(1);
  });

  it("keeps a registered version's files as they were: uploads over its file or into its folder are refused", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "frozen"}) { name } }`, {}, editor));
    const runId = await newRun(server, editor, "frozen-training");
    const original = Buffer.from("approved weights");
    await uploadArtifact(server, runId, "model.bin", original, editor);
    await uploadArtifact(server, runId, "bundle/weights.bin", Buffer.from("bundle weights"), editor);
    // An upload started before the registration and completed after it.
    const late = Buffer.from("swapped weights");
    const pending = ok(
      await server.gql(`mutation($i: ArtifactUploadInput!) { createArtifactUpload(input: $i) { id url } }`, { i: { runId, path: "model.bin", size: late.length, sha256: sha256(late) } }, editor),
    ).createArtifactUpload;
    const REGISTER = `mutation($r: ID!, $p: String!) { createModelVersion(input: {modelName: "frozen", runId: $r, artifactPath: $p}) { version } }`;
    expect(ok(await server.gql(REGISTER, { r: runId, p: "model.bin" }, editor)).createModelVersion.version).toBe(1);
    expect(ok(await server.gql(REGISTER, { r: runId, p: "bundle" }, editor)).createModelVersion.version).toBe(2);

    // Previously each of these replaced the bytes a registered (possibly approved) version serves.
    const CREATE_UPLOAD = `mutation($i: ArtifactUploadInput!) { createArtifactUpload(input: $i) { id } }`;
    for (const path of ["model.bin", "bundle/weights.bin", "bundle/extra.bin"]) {
      const refused = await server.gql(CREATE_UPLOAD, { i: { runId, path, size: late.length, sha256: sha256(late) } }, editor);
      expect(refused.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "input.path" });
    }
    expect((await fetch(pending.url, { method: "PUT", body: late } as RequestInit)).status).toBeLessThan(300);
    const completed = await server.gql(`mutation($id: ID!) { completeArtifactUpload(uploadId: $id) { path } }`, { id: pending.id }, editor);
    expect(completed.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "uploadId" });
    expect(completed.errors?.[0].message).toMatch(/version 1 of model "frozen"/);
    // The version still serves the registered bytes; other paths of the run take uploads as before.
    const listed = ok(await server.gql(`query($r: ID!) { run(id: $r) { artifacts { path sha256 downloadUrl } } }`, { r: runId }, viewer)).run.artifacts;
    const file = listed.find((a: { path: string }) => a.path === "model.bin");
    expect(file.sha256).toBe(sha256(original));
    expect(Buffer.from(await (await fetch(file.downloadUrl)).arrayBuffer()).toString()).toBe("approved weights");
    await uploadArtifact(server, runId, "model-v2.bin", late, editor);
  });

  it("answers lineage from a version and from a dataset", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "lineage"}) { name } }`, {}, editor));
    const parent = await newRun(server, editor, "lineage-exp", { name: "sweep" });
    const child = await newRun(server, editor, "lineage-exp", { name: "trial", parentRunId: parent });
    ok(await server.gql(`mutation($r: ID!) { logInputs(runId: $r, datasets: [{name: "customers", digest: "d1", context: "training"}]) { id } }`, { r: parent }, editor));
    ok(await server.gql(`mutation($r: ID!) { logInputs(runId: $r, datasets: [{name: "customers", digest: "d1", context: "training"}]) { id } }`, { r: child }, editor));
    await uploadArtifact(server, child, "model.bin", Buffer.from("m"), editor);
    ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "lineage", runId: $r, artifactPath: "model.bin"}) { version } }`, { r: child }, editor));
    const lineage = ok(await server.gql(`{ modelVersion(name: "lineage", version: 1) { lineage { sourceRun { id } parentRuns { id name } datasets { dataset { name digest } context } pipelineRunId taskRunId } } }`, {}, viewer)).modelVersion.lineage;
    expect(lineage).toEqual({ sourceRun: { id: child }, parentRuns: [{ id: parent, name: "sweep" }], datasets: [{ dataset: { name: "customers", digest: "d1" }, context: "training" }], pipelineRunId: null, taskRunId: null });
    const down = ok(await server.gql(`{ datasetLineage(name: "customers", digest: "d1") { dataset { name } runs { totalCount edges { node { id } } } modelVersions { totalCount edges { node { version model { name } } } } } }`, {}, viewer)).datasetLineage;
    expect(down.runs.edges.map((e: any) => e.node.id).sort()).toEqual([parent, child].sort());
    expect(down.runs.totalCount).toBe(2);
    expect(down.modelVersions).toEqual({ totalCount: 1, edges: [{ node: { version: 1, model: { name: "lineage" } } }] });
    expect(ok(await server.gql(`{ datasetLineage(name: "customers", digest: "nope") { dataset { name } } }`, {}, viewer)).datasetLineage).toBeNull();
  });

  it("pages a dataset's downstream runs and versions by key, oldest first, without repeats while runs are added", async () => {
    const LINEAGE = `query($after: String) { datasetLineage(name: "popular", digest: "p1") {
      runs(first: 2, after: $after) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { node { id } } }
      modelVersions(first: 1) { totalCount edges { node { version } } } } }`;
    const started: string[] = [];
    for (let i = 0; i < 3; i++) {
      // Start times a minute apart, in order: the list is oldest first.
      const runId = await newRun(server, editor, "popular-exp", { startTime: new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString() });
      ok(await server.gql(`mutation($r: ID!) { logInputs(runId: $r, datasets: [{name: "popular", digest: "p1"}]) { id } }`, { r: runId }, editor));
      started.push(runId);
    }
    const first = ok(await server.gql(LINEAGE, {}, viewer)).datasetLineage;
    expect(first.runs.edges.map((e: any) => e.node.id)).toEqual(started.slice(0, 2));
    expect(first.runs).toMatchObject({ totalCount: 3, pageInfo: { hasNextPage: true, hasPreviousPage: false } });
    expect(first.modelVersions).toEqual({ totalCount: 0, edges: [] });
    // A run started before the others joins between the two pages: an offset would repeat one.
    const early = await newRun(server, editor, "popular-exp", { startTime: new Date(Date.UTC(2025, 0, 1)).toISOString() });
    ok(await server.gql(`mutation($r: ID!) { logInputs(runId: $r, datasets: [{name: "popular", digest: "p1"}]) { id } }`, { r: early }, editor));
    const second = ok(await server.gql(LINEAGE, { after: first.runs.pageInfo.endCursor }, viewer)).datasetLineage.runs;
    expect(second.edges.map((e: any) => e.node.id)).toEqual([started[2]]);
    expect(second).toMatchObject({ totalCount: 4, pageInfo: { hasNextPage: false, hasPreviousPage: true } });
    const past = ok(await server.gql(LINEAGE, { after: second.pageInfo.endCursor }, viewer)).datasetLineage.runs;
    expect(past).toMatchObject({ totalCount: 4, edges: [], pageInfo: { hasNextPage: false } });
    const bad = await server.gql(LINEAGE, { after: "bm90LWEtY3Vyc29y" }, viewer);
    expect(bad.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "after" });
  });

  it("enforces roles on registry writes", async () => {
    const denied = await server.gql(`mutation { createRegisteredModel(input: {name: "by-viewer"}) { name } }`, {}, viewer);
    expect(denied.errors?.[0].extensions?.code).toBe("FORBIDDEN");
    const policy = await server.gql(`mutation { setApprovalPolicy(modelName: "churn", policy: {}) { name } }`, {}, editor);
    expect(policy.errors?.[0].extensions?.code).toBe("FORBIDDEN");
    const hook = await server.gql(`mutation { createWebhook(input: {url: "http://127.0.0.1:1/x", events: [ALIAS_SET], secret: "0123456789abcdef"}) { id } }`, {}, editor);
    expect(hook.errors?.[0].extensions?.code).toBe("FORBIDDEN");
  });
});

describe("model registry: stage transitions on an open loopback server", () => {
  let server: TestServer;
  beforeAll(async () => {
    // No MLGRAPH_ALLOW_SELF_APPROVAL: every caller is the same anonymous admin.
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });
  const REQUEST = `mutation($n: String!, $v: Int!, $to: ModelStage!) { requestStageTransition(input: {modelName: $n, version: $v, toStage: $to}) { id } }`;
  const APPROVE = `mutation($id: ID!) { approveStageTransition(requestId: $id) { status modelVersion { stage aliases } } }`;

  it("sends one ALIAS_SET for an alias set twice to the same version (a retry), and one for each real move", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "alias-retry"}) { name } }`));
    const runId = await newRun(server, undefined, "alias-retry-exp");
    await uploadArtifact(server, runId, "model.bin", Buffer.from("m"));
    for (let i = 0; i < 2; i++) ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "alias-retry", runId: $r, artifactPath: "model.bin"}) { version } }`, { r: runId }));
    // Nothing listens there: the deliveries stay queued, and are counted.
    const hook = ok(await server.gql(`mutation { createWebhook(input: {url: "http://127.0.0.1:1/x", events: [ALIAS_SET], secret: "0123456789abcdef", modelName: "alias-retry"}) { id } }`)).createWebhook;
    const SET = `mutation($v: Int!) { setModelAlias(modelName: "alias-retry", alias: "candidate", version: $v) { version aliases } }`;
    for (const v of [1, 1, 2, 2]) expect(ok(await server.gql(SET, { v })).setModelAlias).toEqual({ version: v, aliases: ["candidate"] });
    const deliveries = ok(await server.gql(`{ webhooks { id deliveries { edges { node { event payload } } } } }`)).webhooks.find((w: any) => w.id === hook.id).deliveries.edges;
    // Previously four, one per call.
    expect(deliveries.map((d: any) => [d.node.event, d.node.payload.data?.version ?? d.node.payload.version]).sort()).toEqual([["ALIAS_SET", 1], ["ALIAS_SET", 2]]);
  });

  it("lets the anonymous admin approve (there is no one else), and closes requests that start from a stage the version left", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "stale"}) { name } }`));
    ok(await server.gql(`mutation { setApprovalPolicy(modelName: "stale", policy: {appliesToStages: [ARCHIVED]}) { name } }`));
    const runId = await newRun(server, undefined, "stale-exp");
    await uploadArtifact(server, runId, "model.bin", Buffer.from("m"));
    for (let i = 0; i < 2; i++) ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "stale", runId: $r, artifactPath: "model.bin", modelCard: "# card"}) { version } }`, { r: runId }));

    const toStaging = ok(await server.gql(REQUEST, { n: "stale", v: 1, to: "STAGING" })).requestStageTransition;
    const toProduction = ok(await server.gql(REQUEST, { n: "stale", v: 1, to: "PRODUCTION" })).requestStageTransition;
    // Moving the alias @probe (between versions 1 and 2: setting it where it already is announces
    // nothing) only shows that the subscription is open: an event published before it is lost.
    const events = collect<{ registryEvents: { type: string; requestId: string | null; alias: string | null } }>(
      server.ws(),
      `subscription { registryEvents(modelName: "stale") { type requestId alias } }`,
      {},
      3,
      15_000,
      { ignore: (e) => e.data?.registryEvents.alias === "probe" },
    );
    await probeUntil("registryEvents(stale)", async (attempt) => ok(await server.gql(`mutation($v: Int!) { setModelAlias(modelName: "stale", alias: "probe", version: $v) { version } }`, { v: 2 - (attempt % 2) })), events.heardAny);
    ok(await server.gql(`mutation { setModelAlias(modelName: "stale", alias: "probe", version: 2) { version } }`)); // off version 1, whose aliases are checked below
    // Refused with FORBIDDEN ("you requested this transition") before: nothing could be promoted.
    expect(ok(await server.gql(APPROVE, { id: toProduction.id })).approveStageTransition).toEqual({ status: "APPROVED", modelVersion: { stage: "PRODUCTION", aliases: ["champion"] } });

    // The old NONE -> STAGING request would have demoted the PRODUCTION version and dropped @champion.
    const READ = `query($id: ID!) { stageTransitionRequest(id: $id) { status decisionComment } }`;
    const stale = await server.gql(APPROVE, { id: toStaging.id });
    expect(stale.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "requestId" });
    const closed = ok(await server.gql(READ, { id: toStaging.id })).stageTransitionRequest;
    expect(closed.status).toBe("REJECTED");
    expect(closed.decisionComment).toMatch(/superseded/);
    expect(ok(await server.gql(`{ modelVersion(name: "stale", version: 1) { stage aliases } }`)).modelVersion).toEqual({ stage: "PRODUCTION", aliases: ["champion"] });
    // Its closing is announced like any rejection.
    const seen = (await events.done).map((e) => e.data!.registryEvents);
    expect(seen).toContainEqual({ type: "STAGE_TRANSITION_REJECTED", requestId: toStaging.id, alias: null });

    // A pending request of the version that an approval archives is closed too.
    const backToStaging = ok(await server.gql(REQUEST, { n: "stale", v: 1, to: "STAGING" })).requestStageTransition;
    const v2 = ok(await server.gql(REQUEST, { n: "stale", v: 2, to: "PRODUCTION" })).requestStageTransition;
    ok(await server.gql(APPROVE, { id: v2.id }));
    expect(ok(await server.gql(READ, { id: backToStaging.id })).stageTransitionRequest.status).toBe("REJECTED");
    expect(ok(await server.gql(`{ modelVersion(name: "stale", version: 1) { stage aliases } }`)).modelVersion).toEqual({ stage: "ARCHIVED", aliases: [] });
  });
});

describe("model registry: atomic aliases and stages under concurrency", () => {
  let server: TestServer;
  beforeAll(async () => {
    // Open loopback server: every caller is the same anonymous admin, so self-approval is enabled.
    server = await startTestServer({ env: { MLGRAPH_ALLOW_SELF_APPROVAL: "true", MLGRAPH_DEBUG_QUERY_COUNTS: "1" }, redis: true });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("reads versions and lineages of many models in a constant number of statements (no N+1)", async () => {
    const QUERY = `query($p: String!) { registeredModels(first: 20, filter: $p) { edges { node { name
      versions(first: 2) { edges { node { version lineage { sourceRun { id } parentRuns { id } pipelineRunId } } } } } } } }`;
    const parent = await newRun(server, undefined, "n-plus-one");
    const runId = await newRun(server, undefined, "n-plus-one", { parentRunId: parent });
    await uploadArtifact(server, runId, "model.bin", Buffer.from("w"));
    const statementsFor = async (models: number, prefix: string) => {
      for (let m = 0; m < models; m++) {
        ok(await server.gql(`mutation($n: String!) { createRegisteredModel(input: {name: $n}) { name } }`, { n: `${prefix}-${m}` }));
        for (let v = 0; v < 3; v++) {
          ok(await server.gql(`mutation($n: String!, $r: ID!) { createModelVersion(input: {modelName: $n, runId: $r, artifactPath: "model.bin"}) { version } }`, { n: `${prefix}-${m}`, r: runId }));
        }
      }
      const res = await server.gql(QUERY, { p: `name LIKE '${prefix}-%'` });
      const models_ = ok(res).registeredModels.edges;
      expect(models_).toHaveLength(models);
      for (const e of models_) {
        expect(e.node.versions.edges.map((v: any) => v.node.version)).toEqual([3, 2]);
        expect(e.node.versions.edges[0].node.lineage.parentRuns).toEqual([{ id: parent }]);
      }
      return (res as any).extensions.queryCounts.postgres as number;
    };
    // Previously one versions query per model and two lineage queries per version.
    expect(await statementsFor(8, "np-many")).toBe(await statementsFor(2, "np-few"));
  });

  it("validates names and aliases, resolves aliases, and refuses duplicates", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "dup"}) { name } }`));
    const dup = await server.gql(`mutation { createRegisteredModel(input: {name: "dup"}) { name } }`);
    expect(dup.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "input.name" });
    const badAlias = await server.gql(`mutation { setModelAlias(modelName: "dup", alias: "v3", version: 1) { version } }`);
    expect(badAlias.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "alias" });
    const noVersion = await server.gql(`mutation { setModelAlias(modelName: "dup", alias: "x", version: 9) { version } }`);
    expect(noVersion.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "version" });
    const noAlias = await server.gql(`mutation { deleteModelAlias(modelName: "dup", alias: "x") }`);
    expect(noAlias.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "alias" });
    ok(await server.gql(`mutation { updateRegisteredModel(input: {name: "dup", newName: "dup-renamed", description: "d"}) { name } }`));
    const found = ok(await server.gql(`{ registeredModels(filter: "name LIKE 'dup%'") { edges { node { name description } } } }`)).registeredModels.edges;
    expect(found).toEqual([{ node: { name: "dup-renamed", description: "d" } }]);
    const badFilter = await server.gql(`{ registeredModels(filter: "name ~ 'x'") { totalCount } }`);
    expect(badFilter.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "filter" });
  });

  it("registers one version per idempotency key: a resend returns it and notifies no one again, other input is CONFLICT, other models keep their own keys", async () => {
    const receiver = await startWebhookReceiver(SECRET);
    try {
      for (const name of ["idem-model", "idem-model-other"]) ok(await server.gql(`mutation($n: String!) { createRegisteredModel(input: {name: $n}) { name } }`, { n: name }));
      const hook = ok(await server.gql(`mutation($i: CreateWebhookInput!) { createWebhook(input: $i) { id } }`, { i: { url: receiver.url, events: ["MODEL_VERSION_CREATED"], secret: SECRET, modelName: "idem-model" } })).createWebhook;
      const runId = await newRun(server, undefined, "idem-training");
      await uploadArtifact(server, runId, "model.bin", Buffer.from("weights"));
      const CREATE = `mutation($i: CreateModelVersionInput!) { createModelVersion(input: $i) { version description run { id } } }`;
      const input = { modelName: "idem-model", runId, artifactPath: "model.bin", description: "first", tags: [{ key: "k", value: "v" }], idempotencyKey: "register-1" };
      const first = ok(await server.gql(CREATE, { i: input })).createModelVersion;
      expect(first).toEqual({ version: 1, description: "first", run: { id: runId } });
      expect(ok(await server.gql(CREATE, { i: input })).createModelVersion).toEqual(first);

      const changed = await server.gql(CREATE, { i: { ...input, description: "second" } });
      expect(changed.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "input.idempotencyKey" });
      expect(changed.errors?.[0].message).toMatch(/version 1 of model "idem-model"/);
      expect(changed.errors?.[0].message).toMatch(/different input/);
      for (const idempotencyKey of ["", "k".repeat(251)]) {
        const refused = await server.gql(CREATE, { i: { ...input, idempotencyKey } });
        expect(refused.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.idempotencyKey" });
      }
      const elsewhere = ok(await server.gql(CREATE, { i: { ...input, modelName: "idem-model-other" } })).createModelVersion;
      expect(elsewhere.version).toBe(1);

      const raced = await Promise.all(Array.from({ length: 20 }, () => server.gql(CREATE, { i: { ...input, idempotencyKey: "raced" } })));
      expect(raced.map((a) => ok(a).createModelVersion.version)).toEqual(Array(20).fill(2));
      const versions = ok(await server.gql(`{ registeredModel(name: "idem-model") { versions { edges { node { version } } } } }`, {})).registeredModel.versions.edges;
      expect(versions.map((e: any) => e.node.version)).toEqual([2, 1]);

      // One delivery per version registered: the resends enqueued none (written with the version, in its transaction).
      const deliveries = ok(await server.gql(`{ webhooks { id deliveries(first: 100) { edges { node { event payload } } } } }`, {})).webhooks.find((w: any) => w.id === hook.id).deliveries.edges;
      expect(deliveries.map((e: any) => [e.node.event, e.node.payload.version]).sort()).toEqual([["MODEL_VERSION_CREATED", 1], ["MODEL_VERSION_CREATED", 2]]);
    } finally {
      await receiver.close();
    }
  });

  /** A test that holds row locks from a connection of its own (needs TEST_DATABASE_URL). */
  const withDatabase = (() => {
    if (process.env.TEST_DATABASE_URL) return it;
    if (process.env.MLGRAPH_REQUIRE_ALL_SERVICES) throw new Error("registry: TEST_DATABASE_URL is required in CI");
    return it.skip;
  })();

  /**
   * Runs `mutation` while this test holds the row `lockSql` locks, waits until the mutation waits
   * for it, runs `meanwhile`, then lets the mutation go on; returns its answer.
   */
  async function whileHeld(lockSql: string, lockParams: unknown[], mutation: () => Promise<any>, meanwhile: () => Promise<void>): Promise<any> {
    const holder = new pg.Client({ connectionString: server.databaseUrl });
    const watcher = new pg.Client({ connectionString: server.databaseUrl });
    await holder.connect();
    await watcher.connect();
    try {
      const pid = (await holder.query("SELECT pg_backend_pid() AS pid")).rows[0].pid as number;
      await holder.query("BEGIN");
      await holder.query(lockSql, lockParams);
      const answer = mutation();
      await waitFor("the mutation to wait for the held row", async () => {
        const r = await watcher.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, [pid]);
        return r.rows[0].n >= 1;
      });
      await meanwhile();
      await holder.query("ROLLBACK");
      return await answer;
    } finally {
      await holder.query("ROLLBACK").catch(() => undefined);
      await holder.end();
      await watcher.end();
    }
  }

  withDatabase("refuses a version from a run deleted (or whose experiment was deleted) while the registration waited for the model", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "deleted-source"}) { name } }`));
    const CREATE = `mutation($r: ID!) { createModelVersion(input: {modelName: "deleted-source", runId: $r, artifactPath: "model.bin"}) { version } }`;
    const runId = await newRun(server, undefined, "deleted-source-exp");
    await uploadArtifact(server, runId, "model.bin", Buffer.from("m"));
    const refused = await whileHeld(
      "SELECT 1 FROM registered_models WHERE name = $1 FOR UPDATE",
      ["deleted-source"],
      () => server.gql(CREATE, { r: runId }),
      async () => void ok(await server.gql(`mutation($r: ID!) { deleteRun(id: $r) { id } }`, { r: runId })),
    );
    // Previously: version 1, registered from the run deleted meanwhile.
    expect(refused.errors?.[0].extensions).toMatchObject({ code: "NOT_FOUND", field: "input.runId" });

    const otherRun = await newRun(server, undefined, "deleted-source-exp2");
    await uploadArtifact(server, otherRun, "model.bin", Buffer.from("m"));
    const experimentId = ok(await server.gql(`query($r: ID!) { run(id: $r) { experiment { id } } }`, { r: otherRun })).run.experiment.id;
    const refusedToo = await whileHeld(
      "SELECT 1 FROM registered_models WHERE name = $1 FOR UPDATE",
      ["deleted-source"],
      () => server.gql(CREATE, { r: otherRun }),
      async () => void ok(await server.gql(`mutation($e: ID!) { deleteExperiment(id: $e) { id } }`, { e: experimentId })),
    );
    expect(refusedToo.errors?.[0].extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.runId" });
    const model = ok(await server.gql(`{ registeredModel(name: "deleted-source") { versions { edges { node { version } } } } }`)).registeredModel;
    expect(model.versions.edges).toEqual([]);
  });

  withDatabase("refuses a transition request whose version changed stage while the request was being made", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "stale-request"}) { name } }`));
    const runId = await newRun(server, undefined, "stale-request-exp", { params: [{ key: "reviewed", value: "yes" }] });
    await uploadArtifact(server, runId, "model.bin", Buffer.from("m"));
    ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "stale-request", runId: $r, artifactPath: "model.bin", modelCard: "# card"}) { version } }`, { r: runId }));
    // Requests into STAGING run a threshold (through run search, so on run_params); into PRODUCTION none.
    ok(await server.gql(`mutation { setApprovalPolicy(modelName: "stale-request", policy: {appliesToStages: [STAGING], metricThresholds: ["params.reviewed = 'yes'"]}) { name } }`));
    const toProduction = ok(await server.gql(`mutation { requestStageTransition(input: {modelName: "stale-request", version: 1, toStage: PRODUCTION}) { id } }`)).requestStageTransition;
    const REQUEST_STAGING = `mutation { requestStageTransition(input: {modelName: "stale-request", version: 1, toStage: STAGING}) { id fromStage status } }`;
    // The STAGING request reads the version (NONE), then its check waits for run_params (held
    // here) while the PRODUCTION request is approved.
    const answer = await whileHeld(
      "LOCK TABLE run_params IN ACCESS EXCLUSIVE MODE",
      [],
      () => server.gql(REQUEST_STAGING),
      async () => void ok(await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status } }`, { id: toProduction.id })),
    );
    // Previously: a PENDING request "NONE -> STAGING" for a version already in PRODUCTION, which
    // the approval had not closed (it did not exist yet) and no approval could ever carry out.
    expect(answer.errors?.[0].extensions).toMatchObject({ code: "CONFLICT", field: "input.version" });
    const requests = ok(await server.gql(`{ modelVersion(name: "stale-request", version: 1) { stage transitionRequests { fromStage toStage status } } }`)).modelVersion;
    expect(requests).toEqual({ stage: "PRODUCTION", transitionRequests: [{ fromStage: "NONE", toStage: "PRODUCTION", status: "APPROVED" }] });
  });

  it("pages through a model's versions, newest first, without repeats while new versions are registered", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "paging"}) { name } }`));
    const runId = await newRun(server, undefined, "paging-exp");
    await uploadArtifact(server, runId, "model.bin", Buffer.from("m"));
    const register = async () =>
      ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "paging", runId: $r, artifactPath: "model.bin"}) { version } }`, { r: runId })).createModelVersion.version;
    for (let i = 0; i < 5; i++) await register();
    const PAGE = `query($after: String) { registeredModel(name: "paging") { versions(first: 2, after: $after) { edges { node { version } } pageInfo { hasNextPage endCursor } } } }`;
    const seen: number[] = [];
    let after: string | null = null;
    for (;;) {
      const page: any = ok(await server.gql(PAGE, { after })).registeredModel.versions;
      seen.push(...page.edges.map((e: any) => e.node.version));
      // A pipeline registers a version between every two pages.
      await register();
      if (!page.pageInfo.hasNextPage) break;
      after = page.pageInfo.endCursor;
    }
    // Previously each new version pushed the rest down by one: [5, 4, 4, 3, 3, 2, 2, 1].
    expect(seen).toEqual([5, 4, 3, 2, 1]);
  });

  it("50 concurrent alias moves and approvals leave exactly one @champion and one PRODUCTION version at every observation", async () => {
    ok(await server.gql(`mutation { createRegisteredModel(input: {name: "race"}) { name } }`));
    ok(await server.gql(`mutation { setApprovalPolicy(modelName: "race", policy: {appliesToStages: [ARCHIVED]}) { name } }`));
    const runId = await newRun(server, undefined, "race-exp");
    await uploadArtifact(server, runId, "model.bin", Buffer.from("m"));
    const VERSIONS = 10;
    for (let i = 0; i < VERSIONS; i++) {
      ok(await server.gql(`mutation($r: ID!) { createModelVersion(input: {modelName: "race", runId: $r, artifactPath: "model.bin", modelCard: "# card"}) { version } }`, { r: runId }));
    }
    // Start from a consistent state: v1 in PRODUCTION with @champion.
    const first = ok(await server.gql(`mutation { requestStageTransition(input: {modelName: "race", version: 1, toStage: PRODUCTION}) { id } }`)).requestStageTransition;
    ok(await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status } }`, { id: first.id }));

    const events = collect<{ registryEvents: { type: string; version: number } }>(server.ws(), `subscription { registryEvents(modelName: "race") { type version alias } }`, {}, 50, 60_000);
    await sleep(300);

    const violations: string[] = [];
    let observations = 0;
    let moving = true;
    const observer = (async () => {
      while (moving) {
        const m = ok(await server.gql(`{ registeredModel(name: "race") { aliases { alias version } versions(first: 100) { edges { node { version stage } } } } }`)).registeredModel;
        const champions = m.aliases.filter((a: any) => a.alias === "champion");
        const production = m.versions.edges.filter((e: any) => e.node.stage === "PRODUCTION");
        if (champions.length !== 1) violations.push(`champions: ${JSON.stringify(champions)}`);
        if (production.length !== 1) violations.push(`production: ${JSON.stringify(production)}`);
        observations++;
      }
    })();

    const ops = Array.from({ length: 50 }, async (_, i) => {
      const version = 1 + (i % VERSIONS);
      if (i % 2 === 0) {
        ok(await server.gql(`mutation($v: Int!) { setModelAlias(modelName: "race", alias: "champion", version: $v) { version } }`, { v: version }));
      } else {
        const req = await server.gql(`mutation($v: Int!) { requestStageTransition(input: {modelName: "race", version: $v, toStage: PRODUCTION}) { id } }`, { v: version });
        if (req.errors) {
          // Already PRODUCTION at that moment (input.toStage), or moved by an approval while the
          // request was made (CONFLICT on input.version: a request from a stage it left would be stale).
          expect([`BAD_USER_INPUT input.toStage`, `CONFLICT input.version`]).toContain(`${req.errors[0].extensions?.code} ${req.errors[0].extensions?.field}`);
          return;
        }
        const approved = await server.gql(`mutation($id: ID!) { approveStageTransition(requestId: $id) { status } }`, { id: req.data.requestStageTransition.id });
        // Another approval moved this version meanwhile (promoted, or archived by the next one):
        // a request from a stage the version left is closed, never applied.
        if (approved.errors && approved.errors[0].extensions?.code !== "CONFLICT") throw new Error(JSON.stringify(approved.errors));
      }
    });
    await Promise.all(ops);
    moving = false;
    await observer;
    expect(violations).toEqual([]);
    expect(observations).toBeGreaterThan(0);

    const final = ok(await server.gql(`{ registeredModel(name: "race") { aliases { alias version } versions(first: 100) { edges { node { version stage } } } } }`)).registeredModel;
    expect(final.aliases.filter((a: any) => a.alias === "champion")).toHaveLength(1);
    expect(final.versions.edges.filter((e: any) => e.node.stage === "PRODUCTION")).toHaveLength(1);
    const received = await events.done;
    expect(received.length).toBe(50);
    expect(received.every((e) => e.data?.registryEvents.type)).toBe(true);
  }, 120_000);
});
