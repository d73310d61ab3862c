import fs from "node:fs";
import type { Command } from "commander";
import {
  ApproveStageTransitionDocument,
  CreateModelVersionDocument,
  CreateRegisteredModelDocument,
  DeleteModelAliasDocument,
  GetRegisteredModelDocument,
  ListRegisteredModelsDocument,
  MlgraphError,
  RejectStageTransitionDocument,
  RequestStageTransitionDocument,
  SetModelAliasDocument,
  type ModelStage,
  type TransitionRequestFieldsFragment,
} from "../../client/index.js";
import { action, connect, notFound, noteTruncated, printJson, printTable, readPages, usage, withConnection, type ConnectionFlags } from "./cli-support.js";
import { positiveInt } from "./runs-commands.js";

const STAGES: ModelStage[] = ["NONE", "STAGING", "PRODUCTION", "ARCHIVED"];
/** Rows per request, under the server's default complexity limit (~285 per model or version row; see readPages). */
const MODEL_PAGE = 500;

/** `mlgraph models list|versions|register|alias|promote|approve|reject`. */
export function registerModelCommands(program: Command): void {
  const models = program.command("models").description("model registry: versions, aliases, stage transitions");

  withConnection(models.command("list").description("registered models").option("-f, --filter <expr>", "filter, e.g. \"name LIKE 'churn%'\"").option("--limit <n>", "at most this many", "50")).action(
    action(async (flags: ConnectionFlags & { filter?: string; limit: string }) => {
      const limit = positiveInt("--limit", flags.limit);
      const client = connect(flags);
      const result = await readPages(limit, MODEL_PAGE, async (first, after) => {
        const { registeredModels } = await client.request(ListRegisteredModelsDocument, { filter: flags.filter, first, after });
        return { rows: registeredModels.edges.map((e) => e.node), ...registeredModels.pageInfo };
      });
      noteTruncated("models", result);
      const rows = result.rows;
      if (flags.json) return printJson(rows);
      printTable(
        ["NAME", "LATEST", "STAGE", "ALIASES", "UPDATED"],
        rows.map((m) => [m.name, m.latestVersion?.version, m.latestVersion?.stage, m.aliases.map((a) => `@${a.alias}=v${a.version}`).join(" "), m.updatedAt]),
      );
    }),
  );

  withConnection(models.command("versions <model>").description("a model's versions, newest first").option("--limit <n>", "at most this many", "50")).action(
    action(async (name: string, flags: ConnectionFlags & { limit: string }) => {
      const limit = positiveInt("--limit", flags.limit);
      const client = connect(flags);
      const result = await readPages(limit, MODEL_PAGE, async (first, after) => {
        const { registeredModel } = await client.request(GetRegisteredModelDocument, { name, first, after });
        if (!registeredModel) throw notFound(`registered model ${JSON.stringify(name)} not found`);
        return { rows: registeredModel.versions.edges.map((e) => e.node), ...registeredModel.versions.pageInfo };
      });
      noteTruncated("versions", result);
      const rows = result.rows;
      if (flags.json) return printJson(rows);
      printTable(
        ["VERSION", "STAGE", "ALIASES", "STATUS", "RUN", "CREATED", "ARTIFACT"],
        rows.map((v) => [v.version, v.stage, v.aliases.map((a) => `@${a}`).join(" "), v.status, v.run?.id, v.createdAt, v.artifactUri]),
      );
    }),
  );

  withConnection(
    models
      .command("register <model>")
      .description("register a run's artifact as a new model version (creates the model when new)")
      .requiredOption("--run <run-id>", "the run that produced the model")
      .requiredOption("--path <artifact-path>", "the artifact inside the run, e.g. model")
      .option("--description <text>", "version description")
      .option("--model-card <file>", "a Markdown model card (approval checks look for one)"),
  ).action(
    action(async (name: string, flags: ConnectionFlags & { run: string; path: string; description?: string; modelCard?: string }) => {
      let modelCard: string | undefined;
      if (flags.modelCard) {
        try {
          modelCard = fs.readFileSync(flags.modelCard, "utf8");
        } catch {
          throw usage(`--model-card: cannot read ${flags.modelCard}`);
        }
      }
      const client = connect(flags);
      await client.request(CreateRegisteredModelDocument, { input: { name } }).catch((err: unknown) => {
        if (!(err instanceof MlgraphError && err.code === "CONFLICT")) throw err;
      });
      const { createModelVersion: v } = await client.request(CreateModelVersionDocument, { input: { modelName: name, runId: flags.run, artifactPath: flags.path, description: flags.description, modelCard } });
      if (flags.json) return printJson(v);
      process.stdout.write(`registered ${v.model.name} version ${v.version} (${v.artifactUri})\n`);
    }),
  );

  withConnection(
    models
      .command("alias <model> <alias> [version]")
      .description("point an alias (e.g. champion) at a version, or remove it with --delete")
      .option("--delete", "remove the alias"),
  ).action(
    action(async (name: string, alias: string, version: string | undefined, flags: ConnectionFlags & { delete?: boolean }) => {
      const client = connect(flags);
      const bare = alias.replace(/^@/, "");
      if (flags.delete) {
        const { deleteModelAlias } = await client.request(DeleteModelAliasDocument, { modelName: name, alias: bare });
        if (!deleteModelAlias) throw notFound(`model ${name} has no alias @${bare}`);
        if (flags.json) return printJson({ model: name, alias: bare, deleted: true });
        process.stdout.write(`removed @${bare} from ${name}\n`);
        return;
      }
      if (version === undefined) throw usage("alias needs a version (or --delete)");
      const { setModelAlias: v } = await client.request(SetModelAliasDocument, { modelName: name, alias: bare, version: positiveInt("version", version) });
      if (flags.json) return printJson(v);
      process.stdout.write(`${name}@${bare} -> version ${v.version}\n`);
    }),
  );

  withConnection(
    models
      .command("promote <model> <version>")
      .description("request a stage transition (default PRODUCTION); approval checks run now")
      .option("--stage <stage>", `one of ${STAGES.join(", ")}`, "PRODUCTION")
      .option("--comment <text>", "why"),
  ).action(
    action(async (name: string, version: string, flags: ConnectionFlags & { stage: string; comment?: string }) => {
      const toStage = flags.stage.toUpperCase() as ModelStage;
      if (!STAGES.includes(toStage)) throw usage(`--stage: expected one of ${STAGES.join(", ")}, got ${JSON.stringify(flags.stage)}`);
      const { requestStageTransition: r } = await connect(flags).request(RequestStageTransitionDocument, {
        input: { modelName: name, version: positiveInt("version", version), toStage, comment: flags.comment },
      });
      if (flags.json) return printJson(r);
      printRequest(r);
      if (r.status === "PENDING") process.stdout.write(`approve with: mlgraph models approve ${r.id}\n`);
    }),
  );

  withConnection(models.command("approve <request-id>").description("approve a pending stage transition request (admin)").option("--comment <text>", "why")).action(
    action(async (requestId: string, flags: ConnectionFlags & { comment?: string }) => {
      const { approveStageTransition: r } = await connect(flags).request(ApproveStageTransitionDocument, { requestId, comment: flags.comment });
      if (flags.json) return printJson(r);
      printRequest(r);
    }),
  );

  withConnection(models.command("reject <request-id>").description("reject a pending stage transition request (admin)").option("--comment <text>", "why")).action(
    action(async (requestId: string, flags: ConnectionFlags & { comment?: string }) => {
      const { rejectStageTransition: r } = await connect(flags).request(RejectStageTransitionDocument, { requestId, comment: flags.comment });
      if (flags.json) return printJson(r);
      printRequest(r);
    }),
  );
}

function printRequest(r: TransitionRequestFieldsFragment): void {
  const v = r.modelVersion;
  process.stdout.write(`request ${r.id}: ${v.model.name} v${v.version} ${r.fromStage} -> ${r.toStage}: ${r.status}\n`);
  process.stdout.write(`version now ${v.stage}${v.aliases.length ? ` (${v.aliases.map((a) => `@${a}`).join(" ")})` : ""}\n`);
  if (r.checks.length > 0) printTable(["CHECK", "PASSED", "DETAIL"], r.checks.map((c) => [c.name, c.passed ? "yes" : "NO", c.detail]));
}
