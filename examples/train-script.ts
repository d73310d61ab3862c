/**
 * A training script using the typed client: a run with params and tags, metrics through the
 * buffered logger (the loop never waits on the network), a model artifact, and a registered
 * model version with an alias. Compiled by the test suite (test/unit/client/examples-compile.test.ts).
 *
 *   npx tsc -p examples && node dist/examples/train-script.js     (MLGRAPH_URL, MLGRAPH_TOKEN)
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  CreateExperimentDocument,
  CreateModelVersionDocument,
  CreateRegisteredModelDocument,
  CreateRunDocument,
  GetExperimentDocument,
  MlgraphError,
  SetModelAliasDocument,
  UpdateRunDocument,
  createClient,
  uploadArtifact,
} from "../client/index.js";

async function main(): Promise<void> {
  const client = createClient({ url: process.env.MLGRAPH_URL ?? "http://127.0.0.1:4000/graphql", token: process.env.MLGRAPH_TOKEN });

  const experimentName = "churn-ts";
  const existing = (await client.request(GetExperimentDocument, { name: experimentName })).experiment;
  const experiment = existing ?? (await client.request(CreateExperimentDocument, { input: { name: experimentName } })).createExperiment;

  const lr = 0.05;
  const { createRun: run } = await client.request(CreateRunDocument, {
    input: { experimentId: experiment.id, name: `lr-${lr}`, params: [{ key: "lr", value: String(lr) }, { key: "epochs", value: "50" }], tags: [{ key: "script", value: "train-script.ts" }] },
  });
  console.log(`run ${run.id} started`);

  const metrics = client.metricLogger(run.id, { onError: (err, { willRetry }) => console.warn(`metrics: ${err.message}${willRetry ? " (retrying)" : ""}`) });
  try {
    for (let epoch = 0; epoch < 50; epoch++) {
      const loss = Math.exp(-lr * epoch) + Math.random() * 0.01;
      metrics.logMany({ loss, accuracy: 1 - loss / 2 }, epoch);
    }
    await metrics.close();

    const modelDir = fs.mkdtempSync(path.join(os.tmpdir(), "model-"));
    fs.writeFileSync(path.join(modelDir, "weights.json"), JSON.stringify({ lr, bias: 0.1 }));
    await uploadArtifact(client, run.id, modelDir, { artifactPath: "model", onProgress: ({ doneBytes, totalBytes }) => console.log(`upload ${doneBytes}/${totalBytes} bytes`) });

    await client.request(CreateRegisteredModelDocument, { input: { name: "churn-ts" } }).catch((err: unknown) => {
      if (!(err instanceof MlgraphError && err.code === "CONFLICT")) throw err;
    });
    const { createModelVersion: version } = await client.request(CreateModelVersionDocument, { input: { modelName: "churn-ts", runId: run.id, artifactPath: "model" } });
    await client.request(SetModelAliasDocument, { modelName: "churn-ts", alias: "candidate", version: version.version });
    await client.request(UpdateRunDocument, { input: { runId: run.id, status: "FINISHED" } });
    console.log(`registered churn-ts v${version.version} as @candidate`);
  } catch (err) {
    await client.request(UpdateRunDocument, { input: { runId: run.id, status: "FAILED" } }).catch(() => undefined);
    throw err;
  } finally {
    await client.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof MlgraphError ? `${err.code}${err.field ? ` (${err.field})` : ""}: ${err.message}` : err);
  process.exit(1);
});
