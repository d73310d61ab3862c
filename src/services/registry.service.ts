import { LessThan, type DataSource, type EntityManager } from "typeorm";
import { RegisteredModel, type ApprovalPolicy } from "../entities/registered-model.entity.js";
import { ModelStage, ModelVersion } from "../entities/model-version.entity.js";
import { StageTransitionRequest, StageTransitionStatus } from "../entities/stage-transition-request.entity.js";
import { WebhookEvent } from "../entities/webhook.entity.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import type { Config } from "../config.js";
import type { RequestContext } from "./context.js";
import { DomainError, isUniqueViolation } from "./errors.js";
import { keyedCall, madeWithKey, type KeyedCall } from "./idempotency.js";
import { encodeKeyCursor, keysetWindow, pageWindow, toPage, type Page, type PageArgs } from "./pagination.js";
import { actingFor, satisfiesRole } from "./principal.js";
import { LIMITS, validateId, validateKey, validateKeyValues, validateText, modelAliasProblem, type KeyValue } from "./validation.js";
import { runApprovalChecks, validateApprovalPolicy } from "./approval-policy.js";
import { announceWebhookEvents, enqueueWebhookEvent } from "./webhooks.service.js";
import { parseModelFilter } from "./registered-model-filter.js";
import { liveStream } from "./live-stream.js";
import { newestVersionPerGroup, returnedRows } from "./sql-rows.js";

export const REGISTRY_EVENTS_TOPIC = "registry:events";
/** The alias that follows the PRODUCTION version. */
export const CHAMPION_ALIAS = "champion";

/** What registryEvents subscribers (and webhooks) learn about a registry change. */
export interface RegistryEventPayload {
  type: WebhookEvent;
  modelName: string;
  version: number | null;
  alias: string | null;
  toStage: ModelStage | null;
  requestId: string | null;
  occurredAt: string;
}

const MODEL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.\-/ ]*$/;

function validateModelName(name: unknown, field: string): string {
  const value = validateText(name, field, LIMITS.nameLength);
  if (!MODEL_NAME_PATTERN.test(value)) {
    throw new DomainError("BAD_USER_INPUT", `${field}: must start with a letter or digit and contain only letters, digits, '_', '.', '-', '/' and spaces`, field);
  }
  return value;
}

/** `@champion` and `champion` name the same alias. */
function validateAlias(alias: unknown, field: string): string {
  const value = typeof alias === "string" && alias.startsWith("@") ? alias.slice(1) : alias;
  const problem = typeof value === "string" ? modelAliasProblem(value) : "an alias starts with a letter and has up to 100 letters, digits, '_' or '-'";
  if (problem) throw new DomainError("BAD_USER_INPUT", `${field}: ${problem}`, field);
  return value as string;
}

/**
 * The model registry: models, versions, aliases and stages. Every change to versions, aliases
 * or stages of a model runs in one transaction that first locks the model's row, so version
 * numbers are gapless and there is never a moment with two `@champion`s or two PRODUCTION
 * versions. Each change writes its webhook outbox rows in the same transaction and publishes a
 * registry event after the commit.
 */
export class RegistryService {
  constructor(
    private readonly db: DataSource,
    private readonly bus: EventBus,
    private readonly config: Config,
  ) {}

  // ---- registered models ----

  async createModel(ctx: RequestContext, input: { name: string; description?: string | null; tags?: KeyValue[] | null }): Promise<RegisteredModel> {
    const name = validateModelName(input.name, "input.name");
    const description = input.description == null ? null : validateText(input.description, "input.description", LIMITS.descriptionLength, { allowEmpty: true });
    const tags = validateKeyValues(input.tags, "input.tags", LIMITS.tagValueLength);
    try {
      return await this.db.transaction(async (em) => {
        const model = await em.getRepository(RegisteredModel).save(em.getRepository(RegisteredModel).create({ name, description, approvalPolicy: {} }));
        if (tags.length) await em.query(`INSERT INTO registered_model_tags (model_id, key, value) SELECT $1, * FROM unnest($2::text[], $3::text[])`, [model.id, tags.map((t) => t.key), tags.map((t) => t.value)]);
        return model;
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new DomainError("CONFLICT", `input.name: a model named ${JSON.stringify(name)} already exists`, "input.name");
      throw err;
    }
  }

  async updateModel(ctx: RequestContext, input: { name: string; newName?: string | null; description?: string | null }): Promise<RegisteredModel> {
    const model = await this.requireModel(input.name, "input.name");
    // Only the columns asked for are written: save() of the model read above would write its stale
    // approval policy (or name) back over a concurrent setApprovalPolicy (or rename).
    const changes: Partial<Pick<RegisteredModel, "name" | "description">> = {};
    if (input.newName != null) changes.name = validateModelName(input.newName, "input.newName");
    if (input.description !== undefined) {
      changes.description = input.description === null ? null : validateText(input.description, "input.description", LIMITS.descriptionLength, { allowEmpty: true });
    }
    try {
      if (Object.keys(changes).length) {
        await this.db.transaction(async (em) => {
          // The name as it is now, under the row lock (a concurrent rename may have changed it).
          const [current] = (await em.query(`SELECT name FROM registered_models WHERE id = $1 FOR UPDATE`, [model.id])) as { name: string }[];
          await em.getRepository(RegisteredModel).update({ id: model.id }, changes);
          // Webhooks scoped to the model follow its new name (they are scoped by name), and so do
          // the pipeline runs that registered a version of it (PipelineRun.registeredModelVersion
          // finds it by name and number; a model later created under the old name is not it).
          if (current && changes.name !== undefined && changes.name !== current.name) {
            await em.query(`UPDATE webhooks SET model_name = $2 WHERE model_name = $1`, [current.name, changes.name]);
            await em.query(`UPDATE pipeline_runs SET registered_model_name = $2 WHERE registered_model_name = $1`, [current.name, changes.name]);
          }
        });
      }
    } catch (err) {
      if (isUniqueViolation(err)) throw new DomainError("CONFLICT", `input.newName: a model named ${JSON.stringify(input.newName)} already exists`, "input.newName");
      throw err;
    }
    return this.db.getRepository(RegisteredModel).findOneByOrFail({ id: model.id });
  }

  async setModelTags(ctx: RequestContext, name: string, tags: KeyValue[]): Promise<RegisteredModel> {
    const valid = validateKeyValues(tags, "tags", LIMITS.tagValueLength);
    const model = await this.requireModel(name, "name");
    if (valid.length) {
      await this.db.query(
        `INSERT INTO registered_model_tags (model_id, key, value) SELECT $1, * FROM unnest($2::text[], $3::text[])
         ON CONFLICT (model_id, key) DO UPDATE SET value = EXCLUDED.value`,
        [model.id, valid.map((t) => t.key), valid.map((t) => t.value)],
      );
    }
    return model;
  }

  async deleteModelTag(ctx: RequestContext, name: string, key: string): Promise<RegisteredModel> {
    validateKey(key, "key");
    const model = await this.requireModel(name, "name");
    await this.db.query(`DELETE FROM registered_model_tags WHERE model_id = $1 AND key = $2`, [model.id, key]);
    return model;
  }

  async setApprovalPolicy(ctx: RequestContext, name: string, policy: ApprovalPolicy): Promise<RegisteredModel> {
    const valid = validateApprovalPolicy(policy, "policy");
    const model = await this.requireModel(name, "name");
    await this.db.getRepository(RegisteredModel).update({ id: model.id }, { approvalPolicy: valid });
    return this.db.getRepository(RegisteredModel).findOneByOrFail({ id: model.id });
  }

  async getModel(_ctx: RequestContext, name: string): Promise<RegisteredModel | null> {
    return this.db.getRepository(RegisteredModel).findOneBy({ name });
  }

  /** Models by name; `filter` e.g. `name LIKE 'churn%' and tags.team = 'nlp'`. */
  async listModels(_ctx: RequestContext, args: { filter?: string | null } & PageArgs): Promise<Page<RegisteredModel>> {
    const window = pageWindow(args);
    const where = parseModelFilter(args.filter ?? "", "filter");
    const rows: { id: string }[] = await this.db.query(
      `SELECT m.id FROM registered_models m WHERE ${where.sql} ORDER BY m.name, m.id LIMIT $${where.params.length + 1} OFFSET $${where.params.length + 2}`,
      [...where.params, window.limit + 1, window.offset],
    );
    const models = await this.modelsByIds(rows.map((r) => r.id));
    const byId = new Map(models.map((m) => [m.id, m]));
    return toPage(rows.map((r) => byId.get(r.id) as RegisteredModel), window);
  }

  // ---- versions ----

  /**
   * Registers a run's artifact as the model's next version. The artifact must exist (recorded and
   * present in the store) before anything is written. With `reuseSameArtifact` (pipelines'
   * on_success), a version of the model already made from this run's artifact is returned
   * instead: looked up under the model's lock, so two tries of one registration racing each other
   * (one outliving its claim, the scheduler's retry) make one version, not two. With an
   * idempotency key, a resend of the call returns the version the first call made (also looked up
   * under the model's lock, so concurrent calls with one key make one version).
   */
  async createVersion(
    ctx: RequestContext,
    input: {
      modelName: string;
      runId: string;
      artifactPath: string;
      description?: string | null;
      modelCard?: string | null;
      tags?: KeyValue[] | null;
      idempotencyKey?: string | null;
    },
    options: { reuseSameArtifact?: boolean } = {},
  ): Promise<ModelVersion> {
    validateText(input.modelName, "input.modelName", LIMITS.nameLength);
    const description = input.description == null ? null : validateText(input.description, "input.description", LIMITS.descriptionLength, { allowEmpty: true });
    const modelCard = input.modelCard == null ? null : validateText(input.modelCard, "input.modelCard", 200_000, { allowEmpty: true });
    const tags = validateKeyValues(input.tags, "input.tags", LIMITS.tagValueLength);
    const keyed = keyedCall(input.idempotencyKey, {
      modelName: input.modelName,
      runId: typeof input.runId === "string" ? input.runId.toLowerCase() : input.runId,
      artifactPath: input.artifactPath,
      description: input.description,
      modelCard: input.modelCard,
      tags: input.tags,
    });
    const run = await ctx.services.runs.requireWritable(ctx, input.runId, "input.runId");
    await this.requireModel(input.modelName, "input.modelName");
    // Present in the store (a HEAD) before anything is written...
    await ctx.services.artifacts.requireExisting(run.id, input.artifactPath, "input.artifactPath");
    const version = await this.db.transaction(async (em) => {
      // ...and its records locked while the version is written: an upload replacing them waits,
      // then sees the version and is refused (a version's files never change).
      const artifactKey = await ctx.services.artifacts.lockRegisteredKey(em, run.id, input.artifactPath, "input.artifactPath");
      const model = await this.lockModel(em, input.modelName, "input.modelName");
      // Checked again under a share lock: the run (or its experiment) may have been deleted while
      // this waited for the locks above, and a deletion from now on waits for this commit.
      await ctx.services.runs.requireWritable(ctx, run.id, "input.runId", em, { lock: "share" });
      if (keyed) {
        const earlier = await this.versionMadeWithKey(em, model, keyed);
        if (earlier) return { created: earlier, isNew: false };
      }
      if (options.reuseSameArtifact) {
        const earlier = await em.getRepository(ModelVersion).findOne({ where: { modelId: model.id, runId: run.id, artifactPath: input.artifactPath }, order: { version: "ASC" } });
        if (earlier) return { created: earlier, isNew: false };
      }
      const [{ next }] = (await em.query(`SELECT coalesce(max(version), 0) + 1 AS next FROM model_versions WHERE model_id = $1`, [model.id])) as { next: number }[];
      const created = await em.getRepository(ModelVersion).save(
        em.getRepository(ModelVersion).create({
          modelId: model.id,
          version: Number(next),
          runId: run.id,
          artifactPath: input.artifactPath,
          artifactKey,
          description,
          modelCard,
          stage: ModelStage.NONE,
          status: "READY",
          createdBy: ctx.principal.name,
          idempotencyKey: keyed?.key ?? null,
          idempotencyFingerprint: keyed?.fingerprint ?? null,
        }),
      );
      if (tags.length) {
        await em.query(`INSERT INTO model_version_tags (model_version_id, key, value) SELECT $1, * FROM unnest($2::text[], $3::text[])`, [created.id, tags.map((t) => t.key), tags.map((t) => t.value)]);
      }
      await enqueueWebhookEvent(em, WebhookEvent.MODEL_VERSION_CREATED, { modelName: model.name, version: created.version, runId: run.id, artifactPath: created.artifactPath }, { modelName: model.name });
      return { created, isNew: true };
    });
    if (version.isNew) await this.announce({ type: WebhookEvent.MODEL_VERSION_CREATED, modelName: input.modelName, version: version.created.version });
    return version.created;
  }

  /** The version of the model registered with this idempotency key, as it is now, or null; refuses a key used with other input. */
  private versionMadeWithKey(em: EntityManager, model: RegisteredModel, keyed: KeyedCall): Promise<ModelVersion | null> {
    return madeWithKey(em, ModelVersion, { table: "model_versions", scopeColumn: "model_id", scopeId: model.id }, keyed, (v) => `version ${v.version} of model ${JSON.stringify(model.name)}`);
  }

  /** By number or by alias (exactly one of them). */
  async getVersion(_ctx: RequestContext, args: { name: string; version?: number | null; alias?: string | null }): Promise<ModelVersion | null> {
    if ((args.version == null) === (args.alias == null)) throw new DomainError("BAD_USER_INPUT", "version: give either version or alias", "version");
    const model = await this.db.getRepository(RegisteredModel).findOneBy({ name: args.name });
    if (!model) return null;
    if (args.version != null) return this.db.getRepository(ModelVersion).findOneBy({ modelId: model.id, version: args.version });
    const alias = validateAlias(args.alias, "alias");
    const rows: { id: string }[] = await this.db.query(`SELECT model_version_id AS id FROM model_aliases WHERE model_id = $1 AND alias = $2`, [model.id, alias]);
    return rows.length ? this.db.getRepository(ModelVersion).findOneBy({ id: rows[0].id }) : null;
  }

  /**
   * A model's versions, newest first; a first page goes through the request's loader (one
   * statement for every model listed). Cursors name a version number: a later page starts below
   * it, so versions registered meanwhile (they come first) never make a page repeat one.
   */
  async listVersions(ctx: RequestContext, modelId: string, args: PageArgs): Promise<Page<ModelVersion>> {
    const { after, window } = keysetWindow(args, /^(\d{1,9})$/);
    let page: Page<ModelVersion>;
    if (after) {
      const rows = await this.db.getRepository(ModelVersion).find({ where: { modelId, version: LessThan(Number(after[1])) }, order: { version: "DESC" }, take: window.limit + 1 });
      page = { ...toPage(rows, window), hasPreviousPage: true };
    } else {
      const rows =
        window.offset === 0
          ? await ctx.loaders.modelVersionsFirstPage.load(`${window.limit}\u0000${modelId}`)
          : await this.db.getRepository(ModelVersion).find({ where: { modelId }, order: { version: "DESC" }, skip: window.offset, take: window.limit + 1 });
      page = toPage(rows, window);
    }
    return { ...page, cursors: page.items.map((v) => encodeKeyCursor(String(v.version))) };
  }

  /** The newest `limit + 1` versions of each model (a first page and whether there is more). */
  async firstVersionsOf(modelIds: readonly string[], limit: number): Promise<Map<string, ModelVersion[]>> {
    const rows = modelIds.length
      ? await this.db
          .getRepository(ModelVersion)
          .createQueryBuilder("v")
          .where(
            `v.id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY model_id ORDER BY version DESC) AS rn FROM model_versions WHERE model_id = ANY(:ids)) ranked WHERE rn <= :n)`,
            { ids: [...modelIds], n: limit + 1 },
          )
          .orderBy("v.version", "DESC")
          .getMany()
      : [];
    const byModel = new Map<string, ModelVersion[]>();
    for (const v of rows) byModel.set(v.modelId, [...(byModel.get(v.modelId) ?? []), v]);
    return byModel;
  }

  // ---- aliases ----

  async setAlias(ctx: RequestContext, modelName: string, aliasInput: string, versionNumber: number): Promise<ModelVersion> {
    const alias = validateAlias(aliasInput, "alias");
    this.assertMayMoveChampion(ctx, alias);
    const outcome = await this.db.transaction(async (em) => {
      const model = await this.lockModel(em, modelName, "modelName");
      const target = await em.getRepository(ModelVersion).findOneBy({ modelId: model.id, version: versionNumber });
      if (!target) throw new DomainError("NOT_FOUND", `version: ${modelName} has no version ${versionNumber}`, "version");
      const moved = await this.pointAlias(em, model.id, alias, target.id);
      if (moved) await enqueueWebhookEvent(em, WebhookEvent.ALIAS_SET, { modelName: model.name, alias, version: target.version }, { modelName: model.name });
      return { target, moved };
    });
    if (outcome.moved) await this.announce({ type: WebhookEvent.ALIAS_SET, modelName, version: outcome.target.version, alias });
    return outcome.target;
  }

  async deleteAlias(ctx: RequestContext, modelName: string, aliasInput: string): Promise<boolean> {
    const alias = validateAlias(aliasInput, "alias");
    this.assertMayMoveChampion(ctx, alias);
    const version = await this.db.transaction(async (em) => {
      const model = await this.lockModel(em, modelName, "modelName");
      const removed = returnedRows<{ version: number }>(await em.query(
        `DELETE FROM model_aliases a USING model_versions v WHERE a.model_id = $1 AND a.alias = $2 AND v.id = a.model_version_id RETURNING v.version`,
        [model.id, alias],
      ));
      if (removed.length === 0) throw new DomainError("NOT_FOUND", `alias: ${modelName} has no alias ${JSON.stringify(alias)}`, "alias");
      await enqueueWebhookEvent(em, WebhookEvent.ALIAS_DELETED, { modelName: model.name, alias, version: removed[0].version }, { modelName: model.name });
      return removed[0].version;
    });
    await this.announce({ type: WebhookEvent.ALIAS_DELETED, modelName, version, alias });
    return true;
  }

  // ---- stage transitions ----

  /** Creates a PENDING request and stores the approval policy's check results right away. */
  async requestTransition(
    ctx: RequestContext,
    input: { modelName: string; version: number; toStage: ModelStage; comment?: string | null },
  ): Promise<StageTransitionRequest> {
    const comment = input.comment == null ? null : validateText(input.comment, "input.comment", LIMITS.descriptionLength, { allowEmpty: true });
    const model = await this.requireModel(input.modelName, "input.modelName");
    const version = await this.db.getRepository(ModelVersion).findOneBy({ modelId: model.id, version: input.version });
    if (!version) throw new DomainError("NOT_FOUND", `input.version: ${model.name} has no version ${input.version}`, "input.version");
    // A task token acts only for its own run: it may ask to promote a version registered from it.
    if (ctx.principal.role === "task" && version.runId.toLowerCase() !== ctx.principal.scope.runId?.toLowerCase()) {
      throw new DomainError("FORBIDDEN", `input.version: a task token may only request transitions of versions registered from its own run`, "input.version");
    }
    if (version.stage === input.toStage) throw new DomainError("BAD_USER_INPUT", `input.toStage: version ${version.version} is already ${version.stage}`, "input.toStage");
    const checks = await runApprovalChecks(ctx, model.approvalPolicy ?? {}, version, input.toStage);
    const requester = actingFor(ctx.principal);
    const request = await this.db.transaction(async (em) => {
      // Under the model's lock, as every stage change: the version was read (and its checks run)
      // without it, and an approval committed meanwhile may have moved it. A request from the
      // stage it left could never be approved, and the approval did not close it (it was not
      // written yet).
      await em.query(`SELECT 1 FROM registered_models WHERE id = $1 FOR UPDATE`, [model.id]);
      const [now] = (await em.query(`SELECT stage FROM model_versions WHERE id = $1`, [version.id])) as { stage: ModelStage }[];
      // Moved to the very stage asked for: the same answer as when it was there before the request.
      if (now && now.stage === input.toStage) throw new DomainError("BAD_USER_INPUT", `input.toStage: version ${version.version} is already ${now.stage}`, "input.toStage");
      if (now && now.stage !== version.stage) {
        throw new DomainError(
          "CONFLICT",
          `input.version: version ${version.version} moved from ${version.stage} to ${now.stage} while this request was being made; request the transition again`,
          "input.version",
        );
      }
      const saved = await em.getRepository(StageTransitionRequest).save(
        em.getRepository(StageTransitionRequest).create({
          modelVersionId: version.id,
          fromStage: version.stage,
          toStage: input.toStage,
          status: StageTransitionStatus.PENDING,
          checks,
          comment,
          requestedBy: requester.name,
          requestedById: requester.id,
          decidedBy: null,
          decidedById: null,
          decisionComment: null,
          decidedAt: null,
        }),
      );
      await enqueueWebhookEvent(
        em,
        WebhookEvent.STAGE_TRANSITION_REQUESTED,
        { modelName: model.name, version: version.version, requestId: saved.id, fromStage: version.stage, toStage: input.toStage, checks, requestedBy: requester.name },
        { modelName: model.name },
      );
      return saved;
    });
    await this.announce({ type: WebhookEvent.STAGE_TRANSITION_REQUESTED, modelName: model.name, version: version.version, toStage: input.toStage, requestId: request.id });
    return request;
  }

  /**
   * Approves a PENDING request whose checks all pass at approval time and performs the transition in the same
   * transaction. Into PRODUCTION: the previous PRODUCTION version is ARCHIVED and `@champion`
   * moves to this version. Leaving PRODUCTION removes `@champion` from it.
   */
  async approveTransition(ctx: RequestContext, requestId: string, comment?: string | null): Promise<StageTransitionRequest> {
    this.assertApprover(ctx);
    const decisionComment = comment == null ? null : validateText(comment, "comment", LIMITS.descriptionLength, { allowEmpty: true });
    // Checked again now: the policy or the source run's metrics may have changed since the request
    // stored its checks. Before the transaction, because the checks read run search and the metric
    // store on connections of their own: a transaction holding the model lock and a connection
    // while waiting for another could exhaust the pool under concurrent approvals. Under the lock,
    // the policy must still be the one checked. The request keeps the checks it was approved on.
    const checked = await this.requestForChecks(requestId);
    const checks = await runApprovalChecks(ctx, checked.policy, checked.version, checked.toStage);
    const outcome = await this.db.transaction(async (em) => {
      const { request, version, model } = await this.lockPendingRequest(em, ctx, requestId);
      if (JSON.stringify(model.approvalPolicy ?? {}) !== JSON.stringify(checked.policy)) {
        throw new DomainError("CONFLICT", "requestId: the model's approval policy changed while this approval was being checked; approve again", "requestId");
      }
      const failed = checks.filter((c) => !c.passed);
      if (failed.length) {
        throw new DomainError(
          "CONFLICT",
          `requestId: the approval policy failed (${failed.map((c) => `${c.name}: ${c.detail}`).join("; ")}); fix it and request the transition again`,
          "requestId",
        );
      }
      // A request is a move from one stage: once the version left it (another request was
      // approved meanwhile), approving the old "NONE -> STAGING" would quietly demote a PRODUCTION
      // version and drop @champion.
      if (version.stage !== request.fromStage) {
        throw new DomainError(
          "CONFLICT",
          `requestId: the request moves version ${version.version} from ${request.fromStage}, but it is now in ${version.stage}; request the transition again`,
          "requestId",
        );
      }
      request.checks = checks;
      const archived: number[] = [];
      const archivedIds: string[] = [];
      let championMoved = false;
      if (request.toStage === ModelStage.PRODUCTION) {
        const previous = returnedRows<{ id: string; version: number }>(await em.query(
          `UPDATE model_versions SET stage = 'ARCHIVED', updated_at = now() WHERE model_id = $1 AND stage = 'PRODUCTION' AND id <> $2 RETURNING id, version`,
          [model.id, version.id],
        ));
        archived.push(...previous.map((p) => p.version));
        archivedIds.push(...previous.map((p) => p.id));
        await em.query(`UPDATE model_versions SET stage = 'PRODUCTION', updated_at = now() WHERE id = $1`, [version.id]);
        championMoved = await this.pointAlias(em, model.id, CHAMPION_ALIAS, version.id);
      } else {
        await em.query(`UPDATE model_versions SET stage = $2, updated_at = now() WHERE id = $1`, [version.id, request.toStage]);
        if (version.stage === ModelStage.PRODUCTION) {
          await em.query(`DELETE FROM model_aliases WHERE model_id = $1 AND alias = $2 AND model_version_id = $3`, [model.id, CHAMPION_ALIAS, version.id]);
        }
      }
      // Requests still pending for the versions whose stage just changed start from a stage they
      // are no longer in: they are closed as rejected, saying why, and announced like any
      // rejection (approval bots watching them hear that they closed), rather than left to be
      // approved by mistake.
      const supersededComment = `superseded: the version changed stage (request ${request.id} approved)`;
      const superseded = returnedRows<{ id: string; to_stage: string; version: number }>(await em.query(
        `UPDATE stage_transition_requests r SET status = 'REJECTED', decided_by = 'mlgraph', decided_by_id = 'mlgraph', decided_at = now(), decision_comment = $3
           FROM model_versions v
          WHERE v.id = r.model_version_id AND r.model_version_id = ANY($1::uuid[]) AND r.status = 'PENDING' AND r.id <> $2
          RETURNING r.id, r.to_stage, v.version`,
        [[version.id, ...archivedIds], request.id, supersededComment],
      ));
      for (const closed of superseded) {
        await enqueueWebhookEvent(
          em,
          WebhookEvent.STAGE_TRANSITION_REJECTED,
          { modelName: model.name, version: closed.version, requestId: closed.id, toStage: closed.to_stage, rejectedBy: "mlgraph", comment: supersededComment },
          { modelName: model.name },
        );
      }
      request.status = StageTransitionStatus.APPROVED;
      request.decidedBy = ctx.principal.name;
      request.decidedById = ctx.principal.id;
      request.decisionComment = decisionComment;
      request.decidedAt = new Date();
      const saved = await em.getRepository(StageTransitionRequest).save(request);
      const payload = { modelName: model.name, version: version.version, requestId: request.id, fromStage: version.stage, toStage: request.toStage, archivedVersions: archived, approvedBy: ctx.principal.name, comment: decisionComment };
      await enqueueWebhookEvent(em, WebhookEvent.STAGE_TRANSITION_APPROVED, payload, { modelName: model.name });
      if (championMoved) await enqueueWebhookEvent(em, WebhookEvent.ALIAS_SET, { modelName: model.name, alias: CHAMPION_ALIAS, version: version.version }, { modelName: model.name });
      return { saved, model, version, championMoved, superseded };
    });
    await this.announce({ type: WebhookEvent.STAGE_TRANSITION_APPROVED, modelName: outcome.model.name, version: outcome.version.version, toStage: outcome.saved.toStage, requestId: outcome.saved.id });
    for (const closed of outcome.superseded) {
      await this.announce({ type: WebhookEvent.STAGE_TRANSITION_REJECTED, modelName: outcome.model.name, version: closed.version, toStage: closed.to_stage as ModelStage, requestId: closed.id });
    }
    if (outcome.championMoved) await this.announce({ type: WebhookEvent.ALIAS_SET, modelName: outcome.model.name, version: outcome.version.version, alias: CHAMPION_ALIAS });
    return outcome.saved;
  }

  /** Rejects a PENDING request; the reason is required and recorded with who rejected it. */
  async rejectTransition(ctx: RequestContext, requestId: string, comment?: string | null): Promise<StageTransitionRequest> {
    this.assertApprover(ctx);
    if (comment == null || comment.trim() === "") throw new DomainError("BAD_USER_INPUT", "comment: say why the transition is rejected", "comment");
    const reason = validateText(comment, "comment", LIMITS.descriptionLength);
    const outcome = await this.db.transaction(async (em) => {
      const { request, version, model } = await this.lockPendingRequest(em, ctx, requestId, { selfDecisionAllowed: true });
      request.status = StageTransitionStatus.REJECTED;
      request.decidedBy = ctx.principal.name;
      request.decidedById = ctx.principal.id;
      request.decisionComment = reason;
      request.decidedAt = new Date();
      const saved = await em.getRepository(StageTransitionRequest).save(request);
      await enqueueWebhookEvent(
        em,
        WebhookEvent.STAGE_TRANSITION_REJECTED,
        { modelName: model.name, version: version.version, requestId: request.id, toStage: request.toStage, rejectedBy: ctx.principal.name, comment: reason },
        { modelName: model.name },
      );
      return { saved, model, version };
    });
    await this.announce({ type: WebhookEvent.STAGE_TRANSITION_REJECTED, modelName: outcome.model.name, version: outcome.version.version, toStage: outcome.saved.toStage, requestId: outcome.saved.id });
    return outcome.saved;
  }

  /** registryEvents: live registry changes, optionally of one model. */
  subscribe(ctx: RequestContext, modelName?: string | null): AsyncIterable<RegistryEventPayload> {
    return liveStream<RegistryEventPayload, RegistryEventPayload>(ctx, REGISTRY_EVENTS_TOPIC, {
      filter: (e) => modelName == null || e.modelName === modelName,
      map: (e) => e,
    });
  }

  async getRequest(_ctx: RequestContext, id: string): Promise<StageTransitionRequest | null> {
    validateId(id, "id");
    return this.db.getRepository(StageTransitionRequest).findOneBy({ id });
  }

  // ---- batch reads for loaders ----

  async modelsByIds(ids: readonly string[]): Promise<RegisteredModel[]> {
    return ids.length ? this.db.getRepository(RegisteredModel).createQueryBuilder("m").where("m.id = ANY(:ids)", { ids: [...ids] }).getMany() : [];
  }

  async modelTagsFor(modelIds: readonly string[]): Promise<Map<string, KeyValue[]>> {
    return groupKeyValues(await this.db.query(`SELECT model_id AS owner, key, value FROM registered_model_tags WHERE model_id = ANY($1) ORDER BY key`, [[...modelIds]]));
  }

  async versionTagsFor(versionIds: readonly string[]): Promise<Map<string, KeyValue[]>> {
    return groupKeyValues(await this.db.query(`SELECT model_version_id AS owner, key, value FROM model_version_tags WHERE model_version_id = ANY($1) ORDER BY key`, [[...versionIds]]));
  }

  /** Aliases per model, each with the version number it names (one statement: a consistent snapshot). */
  async aliasesOfModels(modelIds: readonly string[]): Promise<Map<string, { alias: string; version: number }[]>> {
    const rows: { model_id: string; alias: string; version: number }[] = await this.db.query(
      `SELECT a.model_id, a.alias, v.version FROM model_aliases a JOIN model_versions v ON v.id = a.model_version_id WHERE a.model_id = ANY($1) ORDER BY a.alias`,
      [[...modelIds]],
    );
    const map = new Map<string, { alias: string; version: number }[]>();
    for (const r of rows) map.set(r.model_id, [...(map.get(r.model_id) ?? []), { alias: r.alias, version: r.version }]);
    return map;
  }

  async aliasesOfVersions(versionIds: readonly string[]): Promise<Map<string, string[]>> {
    const rows: { model_version_id: string; alias: string }[] = await this.db.query(`SELECT model_version_id, alias FROM model_aliases WHERE model_version_id = ANY($1) ORDER BY alias`, [[...versionIds]]);
    const map = new Map<string, string[]>();
    for (const r of rows) map.set(r.model_version_id, [...(map.get(r.model_version_id) ?? []), r.alias]);
    return map;
  }

  latestVersionsOf(modelIds: readonly string[]): Promise<ModelVersion[]> {
    return newestVersionPerGroup(this.db, ModelVersion, "model_id", modelIds);
  }

  async versionsByRuns(runIds: readonly string[]): Promise<Map<string, ModelVersion[]>> {
    const rows = runIds.length
      ? await this.db.getRepository(ModelVersion).createQueryBuilder("v").where("v.run_id = ANY(:ids)", { ids: [...runIds] }).orderBy("v.created_at").getMany()
      : [];
    const map = new Map<string, ModelVersion[]>();
    for (const r of rows) map.set(r.runId, [...(map.get(r.runId) ?? []), r]);
    return map;
  }

  async requestsOfVersions(versionIds: readonly string[]): Promise<Map<string, StageTransitionRequest[]>> {
    const rows = versionIds.length
      ? await this.db.getRepository(StageTransitionRequest).createQueryBuilder("r").where("r.model_version_id = ANY(:ids)", { ids: [...versionIds] }).orderBy("r.created_at").getMany()
      : [];
    const map = new Map<string, StageTransitionRequest[]>();
    for (const r of rows) map.set(r.modelVersionId, [...(map.get(r.modelVersionId) ?? []), r]);
    return map;
  }

  /** Versions by (model name, version number), one statement. */
  async versionsByNumbers(pairs: readonly { name: string; version: number }[]): Promise<{ modelName: string; version: number; modelVersion: ModelVersion }[]> {
    if (pairs.length === 0) return [];
    const found: { id: string; name: string; version: number }[] = await this.db.query(
      `SELECT v.id, m.name, v.version FROM model_versions v JOIN registered_models m ON m.id = v.model_id
        JOIN unnest($1::text[], $2::int[]) AS p(name, version) ON p.name = m.name AND p.version = v.version`,
      [pairs.map((p) => p.name), pairs.map((p) => p.version)],
    );
    const versions = new Map((await this.versionsByIds(found.map((f) => f.id))).map((v) => [v.id, v]));
    return found.map((f) => ({ modelName: f.name, version: f.version, modelVersion: versions.get(f.id)! }));
  }

  async versionsByIds(ids: readonly string[]): Promise<ModelVersion[]> {
    return ids.length ? this.db.getRepository(ModelVersion).createQueryBuilder("v").where("v.id = ANY(:ids)", { ids: [...ids] }).getMany() : [];
  }

  // ---- internals ----

  private async requireModel(name: string, field: string): Promise<RegisteredModel> {
    if (typeof name !== "string" || name === "") throw new DomainError("BAD_USER_INPUT", `${field}: must be a non-empty string`, field);
    const model = await this.db.getRepository(RegisteredModel).findOneBy({ name });
    if (!model) throw new DomainError("NOT_FOUND", `${field}: model ${JSON.stringify(name)} not found`, field);
    return model;
  }

  /** Locks the model row for the rest of the transaction: all version/alias/stage changes of one model serialize here. */
  private async lockModel(em: EntityManager, name: string, field: string): Promise<RegisteredModel> {
    const rows: { id: string }[] = await em.query(`SELECT id FROM registered_models WHERE name = $1 FOR UPDATE`, [name]);
    if (!rows.length) throw new DomainError("NOT_FOUND", `${field}: model ${JSON.stringify(name)} not found`, field);
    return em.getRepository(RegisteredModel).findOneByOrFail({ id: rows[0].id });
  }

  /**
   * Points the alias at the version; false when it already pointed there. A retried or repeated
   * `setModelAlias` then changes nothing and announces nothing: webhook consumers would otherwise
   * get a second ALIAS_SET (with a new delivery id) for a move that happened once.
   */
  private async pointAlias(em: EntityManager, modelId: string, alias: string, versionId: string): Promise<boolean> {
    const changed = returnedRows<{ alias: string }>(await em.query(
      `INSERT INTO model_aliases (model_id, alias, model_version_id) VALUES ($1, $2, $3)
       ON CONFLICT (model_id, alias) DO UPDATE SET model_version_id = EXCLUDED.model_version_id, updated_at = now()
         WHERE model_aliases.model_version_id <> EXCLUDED.model_version_id
       RETURNING alias`,
      [modelId, alias, versionId],
    ));
    return changed.length > 0;
  }

  /**
   * `@champion` is what serving loads. An approved Production transition moves it; moving or
   * removing it by hand skips the approval policy, so it takes the same role as approving.
   * Other aliases (`@candidate`, `@shadow`, ...) stay free for editors, as in MLflow.
   */
  private assertMayMoveChampion(ctx: RequestContext, alias: string): void {
    if (alias !== CHAMPION_ALIAS || this.isApprover(ctx)) return;
    throw new DomainError(
      "FORBIDDEN",
      `alias: @${CHAMPION_ALIAS} moves with an approved Production transition (requestTransition); setting or removing it directly needs role ${this.config.registry.approverRole}; you are ${ctx.principal.role}`,
      "alias",
    );
  }

  private isApprover(ctx: RequestContext): boolean {
    return satisfiesRole(ctx.principal, [this.config.registry.approverRole]);
  }

  private assertApprover(ctx: RequestContext): void {
    if (!this.isApprover(ctx)) {
      throw new DomainError("FORBIDDEN", `deciding stage transitions needs role ${this.config.registry.approverRole}; you are ${ctx.principal.role}`);
    }
  }

  /** What the approval checks need, read without locks (see approveTransition). */
  private async requestForChecks(requestId: string): Promise<{ policy: ApprovalPolicy; version: ModelVersion; toStage: ModelStage }> {
    validateId(requestId, "requestId");
    const request = await this.db.getRepository(StageTransitionRequest).findOneBy({ id: requestId });
    if (!request) throw new DomainError("NOT_FOUND", `requestId: stage transition request ${JSON.stringify(requestId)} not found`, "requestId");
    const version = await this.db.getRepository(ModelVersion).findOneByOrFail({ id: request.modelVersionId });
    const model = await this.db.getRepository(RegisteredModel).findOneByOrFail({ id: version.modelId });
    return { policy: model.approvalPolicy ?? {}, version, toStage: request.toStage };
  }

  /** Locks the model row, then the request; refuses requests already decided and (unless configured) self-approval. */
  private async lockPendingRequest(em: EntityManager, ctx: RequestContext, requestId: string, options: { selfDecisionAllowed?: boolean } = {}) {
    validateId(requestId, "requestId");
    const found = await em.getRepository(StageTransitionRequest).findOneBy({ id: requestId });
    if (!found) throw new DomainError("NOT_FOUND", `requestId: stage transition request ${JSON.stringify(requestId)} not found`, "requestId");
    // Locked by id: a name read first and locked after could meet a rename (NOT_FOUND) or, worse,
    // another model that took the old name meanwhile.
    const [owner] = (await em.query(
      `SELECT m.id FROM model_versions v JOIN registered_models m ON m.id = v.model_id WHERE v.id = $1 FOR UPDATE OF m`,
      [found.modelVersionId],
    )) as { id: string }[];
    const model = await em.getRepository(RegisteredModel).findOneByOrFail({ id: owner!.id });
    const [request] = (await em.query(`SELECT id FROM stage_transition_requests WHERE id = $1 FOR UPDATE`, [requestId])) as { id: string }[];
    const current = await em.getRepository(StageTransitionRequest).findOneByOrFail({ id: request.id });
    if (current.status !== StageTransitionStatus.PENDING) {
      throw new DomainError("CONFLICT", `requestId: the request was already ${current.status.toLowerCase()}`, "requestId");
    }
    // On the open loopback server every caller is the same anonymous admin: there is no "someone
    // else" to approve, and the four-eyes rule cannot hold (auth is the way to get it).
    // (Only that caller: the scheduler's own identity is "anonymous" in kind too, but never approves.)
    const openServerCaller = ctx.principal.kind === "anonymous" && ctx.principal.id === "anonymous";
    const selfApprovalAllowed = options.selfDecisionAllowed || this.config.registry.allowSelfApproval || openServerCaller;
    if (!selfApprovalAllowed && current.requestedById === ctx.principal.id) {
      throw new DomainError("FORBIDDEN", "requestId: you requested this transition, so someone else must approve it", "requestId");
    }
    const version = await em.getRepository(ModelVersion).findOneByOrFail({ id: current.modelVersionId });
    return { request: current, version, model };
  }

  private async announce(event: Omit<RegistryEventPayload, "occurredAt" | "version" | "alias" | "toStage" | "requestId"> & Partial<RegistryEventPayload>): Promise<void> {
    const payload: RegistryEventPayload = {
      version: null,
      alias: null,
      toStage: null,
      requestId: null,
      ...event,
      occurredAt: new Date().toISOString(),
    };
    await this.bus.publish(REGISTRY_EVENTS_TOPIC, payload);
    await announceWebhookEvents(this.bus);
  }
}

function groupKeyValues(rows: { owner: string; key: string; value: string }[]): Map<string, KeyValue[]> {
  const map = new Map<string, KeyValue[]>();
  for (const r of rows) map.set(r.owner, [...(map.get(r.owner) ?? []), { key: r.key, value: r.value }]);
  return map;
}
