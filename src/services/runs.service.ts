import DataLoader from "dataloader";
import type { DataSource, EntityManager } from "typeorm";
import { Run, RunStatus } from "../entities/run.entity.js";
import { RunParam } from "../entities/run-param.entity.js";
import { RunTag } from "../entities/run-tag.entity.js";
import { Dataset } from "../entities/dataset.entity.js";
import { RunInputRecord } from "../entities/run-input.entity.js";
import { Experiment } from "../entities/experiment.entity.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import { DomainError } from "./errors.js";
import { createOnce, IDEMPOTENCY_KEY_FIELD, keyedCall, madeWithKey, type KeyedCall } from "./idempotency.js";
import type { RequestContext } from "./context.js";
import { LIMITS, validateId, validateKey, validateKeyValues, validateText, type KeyValue } from "./validation.js";
import type { Page, PageArgs } from "./pagination.js";
import type { RunSearch } from "./run-search.js";
import { announceWebhookEvents, enqueueWebhookEvent } from "./webhooks.service.js";

export const RUN_EVENTS_TOPIC = "runs:updated";

export interface RunUpdatedEvent {
  runId: string;
  experimentId: string;
}

export interface DatasetInputArgs {
  name: string;
  digest: string;
  sourceUri?: string | null;
  context?: string | null;
}

export interface RunInputView {
  dataset: Dataset;
  context: string | null;
}

const ADJECTIVES = ["amber", "bold", "calm", "deft", "eager", "fair", "glad", "keen", "lucid", "merry", "noble", "quick", "sly", "wise"];
const NOUNS = ["otter", "falcon", "lynx", "heron", "ibex", "koala", "mole", "newt", "orca", "panda", "quail", "raven", "seal", "wolf"];

function generatedRunName(): string {
  const pick = (list: string[]) => list[Math.floor(Math.random() * list.length)];
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${Math.floor(Math.random() * 1000)}`;
}

/** What {@link RunsService.assertWritable} needs to know of a run. */
interface WritableRunState {
  id: string;
  deleted: boolean;
  experiment_name: string;
  experiment_deleted: boolean;
}

const TERMINAL: ReadonlySet<RunStatus> = new Set([RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED]);

/** Tracking runs: creation, lifecycle, immutable params, tags and dataset inputs. */
export class RunsService {
  constructor(
    private readonly db: DataSource,
    private readonly bus: EventBus,
    private readonly search: RunSearch,
  ) {}

  /**
   * Creates a run. With an idempotency key, a resend of the call (same key, same input, same
   * experiment) creates nothing and returns the run the first call created.
   */
  async create(
    ctx: RequestContext,
    input: {
      experimentId: string;
      name?: string | null;
      params?: KeyValue[] | null;
      tags?: KeyValue[] | null;
      parentRunId?: string | null;
      startTime?: Date | null;
      idempotencyKey?: string | null;
    },
  ): Promise<Run> {
    const experimentId = validateId(input.experimentId, "input.experimentId");
    const name = input.name == null ? generatedRunName() : validateText(input.name, "input.name", LIMITS.nameLength);
    const params = validateKeyValues(input.params, "input.params", LIMITS.paramValueLength);
    const tags = validateKeyValues(input.tags, "input.tags", LIMITS.tagValueLength);
    if (input.parentRunId != null) validateId(input.parentRunId, "input.parentRunId");
    const keyed = keyedCall(input.idempotencyKey, {
      experimentId,
      name: input.name,
      params: input.params,
      tags: input.tags,
      parentRunId: input.parentRunId?.toLowerCase(),
      startTime: input.startTime,
    });
    // A task token writes only inside its own run: the runs it may start are child runs of it.
    const task = ctx.principal.role === "task";
    if (task && input.parentRunId?.toLowerCase() !== ctx.principal.scope.runId?.toLowerCase()) {
      throw new DomainError("FORBIDDEN", "input.parentRunId: a task token may only start child runs of its own run", "input.parentRunId");
    }
    const created = await createOnce(keyed, "runs_idempotency_key", () => this.db.transaction(async (em) => {
      // FOR SHARE: a deleteExperiment committed after this read waits until the run is created, one
      // committed before is seen. The insert's foreign-key check alone (KEY SHARE, which an update
      // of deleted_at does not wait for) let a run land in an experiment deleted in the same
      // instant. The parent is read the same way, so what is checked of it holds until the commit.
      const experiment = await em.getRepository(Experiment).findOne({ where: { id: experimentId }, lock: { mode: "pessimistic_read" } });
      if (!experiment) throw new DomainError("NOT_FOUND", `input.experimentId: experiment ${JSON.stringify(input.experimentId)} not found`, "input.experimentId");
      if (experiment.deletedAt) throw new DomainError("BAD_USER_INPUT", `input.experimentId: experiment ${JSON.stringify(experiment.name)} is deleted; restore it first`, "input.experimentId");
      if (input.parentRunId != null) {
        const parent = await em.getRepository(Run).findOne({ where: { id: input.parentRunId }, lock: { mode: "pessimistic_read" } });
        if (!parent) throw new DomainError("NOT_FOUND", `input.parentRunId: run ${JSON.stringify(input.parentRunId)} not found`, "input.parentRunId");
        if (task && parent.experimentId !== experiment.id) {
          throw new DomainError("FORBIDDEN", "input.experimentId: a task token may only start runs in its own run's experiment", "input.experimentId");
        }
      }
      if (keyed) {
        const earlier = await this.runMadeWithKey(em, experiment.id, keyed);
        if (earlier) return { value: earlier, isNew: false };
      }
      const run = await em.getRepository(Run).save(
        em.getRepository(Run).create({
          experimentId: experiment.id,
          name,
          status: RunStatus.RUNNING,
          startTime: input.startTime ?? new Date(),
          endTime: null,
          parentRunId: input.parentRunId ?? null,
          deletedAt: null,
          idempotencyKey: keyed?.key ?? null,
          idempotencyFingerprint: keyed?.fingerprint ?? null,
        }),
      );
      if (params.length) await em.getRepository(RunParam).insert(params.map((p) => ({ ...p, runId: run.id })));
      if (tags.length) await em.getRepository(RunTag).insert(tags.map((t) => ({ ...t, runId: run.id })));
      return { value: run, isNew: true };
    }), (key) => this.runMadeWithKey(this.db.manager, experimentId, key));
    // A resend announces nothing: the first call announced the run.
    if (created.isNew) await this.publishUpdated(created.value);
    return created.value;
  }

  /**
   * The run made in the experiment with this idempotency key, as it is now, or null. Refuses a key
   * used with other input, and one whose run was deleted since (a create never returns a deleted run).
   */
  private async runMadeWithKey(em: EntityManager, experimentId: string, keyed: KeyedCall): Promise<Run | null> {
    const earlier = await madeWithKey(em, Run, { table: "runs", scopeColumn: "experiment_id", scopeId: experimentId }, keyed, (run) => `run ${JSON.stringify(run.id)}`);
    if (earlier?.deletedAt) {
      throw new DomainError(
        "CONFLICT",
        `${IDEMPOTENCY_KEY_FIELD}: the run this key created, ${JSON.stringify(earlier.id)}, has been deleted; restore it (restoreRun) or send a new key to create another run`,
        IDEMPOTENCY_KEY_FIELD,
      );
    }
    return earlier;
  }

  async get(_ctx: RequestContext, id: string): Promise<Run | null> {
    validateId(id, "id");
    return this.db.getRepository(Run).findOneBy({ id });
  }

  /**
   * A run that exists and is not deleted, for writes; `field` names the argument at fault.
   * `lock: "share"` keeps it so (and its experiment) until `em`'s transaction ends: a deleteRun or
   * deleteExperiment committed after the check waits, one committed before it is seen.
   */
  async requireWritable(ctx: RequestContext, id: string, field = "runId", em: EntityManager = this.db.manager, options: { lock?: boolean | "share" } = {}): Promise<Run> {
    this.assertWriteScope(ctx, id, field);
    // Locked before it is read when the caller saves it back: a run read first and locked after
    // would carry fields a concurrent update changed meanwhile, and save() would write them back.
    const lock = options.lock === "share" ? { lock: { mode: "pessimistic_read" as const } } : options.lock ? { lock: { mode: "pessimistic_write" as const } } : {};
    const run = await em.getRepository(Run).findOne({ where: { id }, ...lock });
    if (!run || run.deletedAt) throw new DomainError("NOT_FOUND", `${field}: run ${JSON.stringify(id)} not found`, field);
    const experiment: { name: string; deleted: boolean }[] = await em.query(
      `SELECT name, deleted_at IS NOT NULL AS deleted FROM experiments WHERE id = $1${options.lock === "share" ? " FOR SHARE" : ""}`,
      [run.experimentId],
    );
    if (experiment[0]?.deleted) throw deletedExperiment(field, id, experiment[0].name);
    return run;
  }

  /**
   * The check of {@link requireWritable} without loading the run: one indexed lookup, no entity.
   * Metric ingest calls it once per batch, hundreds of times a second, so the checks of calls that
   * arrive in the same turn of the event loop are read in one query (see {@link writableRuns}).
   * Returns the run's id as stored (a UUID may arrive in upper case; metric rows must use one spelling).
   */
  async assertWritable(ctx: RequestContext, id: string, field = "runId"): Promise<string> {
    const canonical = this.assertWriteScope(ctx, id, field);
    const found = await this.writableRuns.load(canonical);
    if (!found || found.deleted) throw new DomainError("NOT_FOUND", `${field}: run ${JSON.stringify(id)} not found`, field);
    if (found.experiment_deleted) throw deletedExperiment(field, id, found.experiment_name);
    return found.id;
  }

  /**
   * Run state for {@link assertWritable}, by canonical id: the calls of one event-loop turn share
   * one query (scheduled with setImmediate, after the poll phase has handed over every request
   * that arrived). Nothing is cached: each call reads the state as of its own turn, so a run
   * deleted before a call arrives is refused, as with a query per call.
   */
  private readonly writableRuns = new DataLoader<string, WritableRunState | null>(
    async (ids) => {
      const rows: WritableRunState[] = await this.db.query(
        `SELECT r.id, r.deleted_at IS NOT NULL AS deleted, e.name AS experiment_name, e.deleted_at IS NOT NULL AS experiment_deleted
           FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ANY($1::uuid[])`,
        [ids],
      );
      const byId = new Map(rows.map((row) => [row.id, row]));
      return ids.map((id) => byId.get(id) ?? null);
    },
    { cache: false, maxBatchSize: 1000, batchScheduleFn: (dispatch) => setImmediate(dispatch) },
  );

  /** Refuses a task token's write to another run; returns the id in canonical (lower-case) form. */
  private assertWriteScope(ctx: RequestContext, id: string, field: string): string {
    const canonical = validateId(id, field);
    // Task tokens are minted for one task attempt and may write only to that attempt's run
    // (however the client spells its UUID).
    if (ctx.principal.role === "task" && ctx.principal.scope.runId?.toLowerCase() !== canonical) {
      throw new DomainError("FORBIDDEN", `${field}: this task token may only write to its own run`, field);
    }
    return canonical;
  }

  async update(ctx: RequestContext, input: { runId: string; status?: RunStatus | null; endTime?: Date | null; name?: string | null }): Promise<Run> {
    const name = input.name == null ? undefined : validateText(input.name, "input.name", LIMITS.nameLength);
    let finished = false;
    const run = await this.db.transaction(async (em) => {
      const current = await this.requireWritable(ctx, input.runId, "input.runId", em, { lock: true });
      if (name !== undefined) current.name = name;
      if (input.status != null && input.status !== current.status) {
        if (TERMINAL.has(current.status) && input.status === RunStatus.RUNNING) {
          throw new DomainError("CONFLICT", `input.status: run already ended as ${current.status}`, "input.status");
        }
        finished = TERMINAL.has(input.status) && !TERMINAL.has(current.status);
        current.status = input.status;
        if (TERMINAL.has(input.status) && !current.endTime) current.endTime = input.endTime ?? new Date();
      }
      if (input.endTime != null) {
        if (input.endTime.getTime() < current.startTime.getTime()) {
          throw new DomainError("BAD_USER_INPUT", "input.endTime: before the run's startTime", "input.endTime");
        }
        current.endTime = input.endTime;
      }
      const saved = await em.getRepository(Run).save(current);
      // Webhook outbox row in the same transaction as the status change (registry feature).
      if (finished) await enqueueWebhookEvent(em, "RUN_FINISHED", { runId: saved.id, experimentId: saved.experimentId, status: saved.status, endTime: saved.endTime });
      return saved;
    });
    await this.publishUpdated(run);
    if (finished) await announceWebhookEvents(this.bus);
    return run;
  }

  async setDeleted(ctx: RequestContext, id: string, deleted: boolean): Promise<Run> {
    validateId(id, "id");
    // One statement touching deleted_at only: a status or name written by a concurrent updateRun
    // is kept (saving a run read earlier would write its stale fields back).
    const [rows] = (await this.db.query(
      `UPDATE runs SET deleted_at = CASE WHEN $2 THEN coalesce(deleted_at, now()) END WHERE id = $1 RETURNING id`,
      [id, deleted],
    )) as [{ id: string }[], number];
    if (!rows.length) throw new DomainError("NOT_FOUND", `id: run ${JSON.stringify(id)} not found`, "id");
    const run = await this.db.getRepository(Run).findOneByOrFail({ id: rows[0]!.id });
    await this.publishUpdated(run);
    return run;
  }

  /**
   * Params are immutable: logging the same value again is a no-op; a different value for a key
   * already logged is CONFLICT, and then nothing from the call is stored.
   */
  async logParams(ctx: RequestContext, runId: string, params: KeyValue[]): Promise<Run> {
    const valid = validateKeyValues(params, "params", LIMITS.paramValueLength);
    const run = await this.db.transaction(async (em) => {
      const current = await this.requireWritable(ctx, runId, "runId", em, { lock: "share" });
      if (valid.length === 0) return current;
      const existing: { key: string; value: string }[] = await em.query(
        "SELECT key, value FROM run_params WHERE run_id = $1 AND key = ANY($2)",
        [runId, valid.map((p) => p.key)],
      );
      const existingByKey = new Map(existing.map((p) => [p.key, p.value]));
      // Named by its place in the caller's list (`valid` has repeats folded together).
      const conflict = (key: string, previous: string, how: string) => {
        const i = params.findIndex((given) => given.key === key);
        return new DomainError(
          "CONFLICT",
          `params[${i}].value: param ${JSON.stringify(key)} was ${how} as ${JSON.stringify(previous.slice(0, 100))}; params are immutable`,
          `params[${i}].value`,
        );
      };
      valid.forEach((p) => {
        const previous = existingByKey.get(p.key);
        if (previous !== undefined && previous !== p.value) throw conflict(p.key, previous, "already logged");
      });
      const fresh = valid.filter((p) => !existingByKey.has(p.key));
      if (fresh.length) {
        await em.createQueryBuilder().insert().into(RunParam).values(fresh.map((p) => ({ ...p, runId }))).orIgnore().execute();
        // A concurrent logParams may have inserted a different value between our read and insert.
        const stored: { key: string; value: string }[] = await em.query("SELECT key, value FROM run_params WHERE run_id = $1 AND key = ANY($2)", [runId, fresh.map((p) => p.key)]);
        for (const s of stored) {
          const mine = fresh.find((p) => p.key === s.key);
          if (mine && mine.value !== s.value) throw conflict(s.key, s.value, "logged concurrently");
        }
      }
      return current;
    });
    await this.publishUpdated(run);
    return run;
  }

  async setTags(ctx: RequestContext, runId: string, tags: KeyValue[]): Promise<Run> {
    const valid = validateKeyValues(tags, "tags", LIMITS.tagValueLength);
    // Under a share lock on the run and its experiment, as every write into a run: a deletion in
    // the same instant waits for this commit, or this sees the deletion and is refused.
    const run = await this.db.transaction(async (em) => {
      const current = await this.requireWritable(ctx, runId, "runId", em, { lock: "share" });
      if (valid.length) {
        await em.createQueryBuilder().insert().into(RunTag).values(valid.map((t) => ({ ...t, runId }))).orUpdate(["value"], ["run_id", "key"]).execute();
      }
      return current;
    });
    await this.publishUpdated(run);
    return run;
  }

  async deleteTag(ctx: RequestContext, runId: string, key: string): Promise<Run> {
    validateKey(key, "key");
    const run = await this.db.transaction(async (em) => {
      const current = await this.requireWritable(ctx, runId, "runId", em, { lock: "share" });
      await em.getRepository(RunTag).delete({ runId, key });
      return current;
    });
    await this.publishUpdated(run);
    return run;
  }

  /** Records dataset inputs; a dataset is identified by (name, digest) and shared between runs. */
  async logInputs(ctx: RequestContext, runId: string, datasets: DatasetInputArgs[]): Promise<Run> {
    if (datasets.length > LIMITS.itemsPerCall) throw new DomainError("BAD_USER_INPUT", `datasets: at most ${LIMITS.itemsPerCall} per call`, "datasets");
    const valid = datasets.map((d, i) => ({
      name: validateText(d.name, `datasets[${i}].name`, LIMITS.nameLength),
      digest: validateText(d.digest, `datasets[${i}].digest`, 1000),
      sourceUri: d.sourceUri == null ? null : validateText(d.sourceUri, `datasets[${i}].sourceUri`, 4000),
      context: d.context == null ? "" : validateText(d.context, `datasets[${i}].context`, 250, { allowEmpty: true }),
    }));
    // One dataset listed twice is one dataset; the first source URI given wins.
    const byIdentity = new Map<string, (typeof valid)[number]>();
    for (const d of valid) {
      const id = `${d.name}\u0000${d.digest}`;
      const seen = byIdentity.get(id);
      if (!seen) byIdentity.set(id, d);
      else if (seen.sourceUri === null) seen.sourceUri = d.sourceUri;
    }
    const datasetRows = [...byIdentity.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
    const names = datasetRows.map((d) => d.name);
    const digests = datasetRows.map((d) => d.digest);
    const run = await this.db.transaction(async (em) => {
      const current = await this.requireWritable(ctx, runId, "runId", em, { lock: "share" });
      if (valid.length === 0) return current;
      // Set-based and in one sorted order: a row-by-row upsert locked every existing dataset (ON
      // CONFLICT DO UPDATE locks even when nothing changes), so two runs logging [train, val] and
      // [val, train] at once deadlocked. DO NOTHING takes no lock on existing rows, and the
      // source URI is filled in only where it was missing, locking just those rows in id order (NO KEY
      // UPDATE: run_inputs' foreign-key checks take KEY SHARE on datasets, which it does not block).
      await em.query(
        `INSERT INTO datasets (name, digest, source_uri)
         SELECT name, digest, source_uri FROM unnest($1::text[], $2::text[], $3::text[]) AS d(name, digest, source_uri)
         ORDER BY name, digest
         ON CONFLICT (name, digest) DO NOTHING`,
        [names, digests, datasetRows.map((d) => d.sourceUri)],
      );
      const ids: { id: string; name: string; digest: string; missing_source: boolean }[] = await em.query(
        `SELECT x.id, x.name, x.digest, x.source_uri IS NULL AS missing_source FROM datasets x
         JOIN unnest($1::text[], $2::text[]) AS d(name, digest) ON x.name = d.name AND x.digest = d.digest
         ORDER BY x.id`,
        [names, digests],
      );
      const idOf = new Map(ids.map((r) => [`${r.name}\u0000${r.digest}`, r.id]));
      const toFill = ids
        .filter((r) => r.missing_source && byIdentity.get(`${r.name}\u0000${r.digest}`)?.sourceUri != null)
        .map((r) => ({ id: r.id, sourceUri: byIdentity.get(`${r.name}\u0000${r.digest}`)!.sourceUri! }));
      if (toFill.length) {
        await em.query(
          `UPDATE datasets x SET source_uri = u.source_uri
           FROM (SELECT id FROM datasets WHERE id = ANY($1::uuid[]) AND source_uri IS NULL ORDER BY id FOR NO KEY UPDATE) locked
           JOIN unnest($1::uuid[], $2::text[]) AS u(id, source_uri) ON u.id = locked.id
           WHERE x.id = locked.id AND x.source_uri IS NULL`,
          [toFill.map((f) => f.id), toFill.map((f) => f.sourceUri)],
        );
      }
      const inputs = valid.map((d) => ({ datasetId: idOf.get(`${d.name}\u0000${d.digest}`)!, context: d.context }));
      await em.query(
        `INSERT INTO run_inputs (run_id, dataset_id, context)
         SELECT $1, dataset_id, context FROM unnest($2::uuid[], $3::text[]) AS i(dataset_id, context)
         ORDER BY dataset_id, context
         ON CONFLICT DO NOTHING`,
        [runId, inputs.map((i) => i.datasetId), inputs.map((i) => i.context)],
      );
      return current;
    });
    await this.publishUpdated(run);
    return run;
  }

  async paramsFor(runIds: readonly string[]): Promise<Map<string, KeyValue[]>> {
    return this.keyValuesFor("run_params", runIds);
  }

  async tagsFor(runIds: readonly string[]): Promise<Map<string, KeyValue[]>> {
    return this.keyValuesFor("run_tags", runIds);
  }

  private async keyValuesFor(table: "run_params" | "run_tags", runIds: readonly string[]): Promise<Map<string, KeyValue[]>> {
    const rows: { run_id: string; key: string; value: string }[] = await this.db.query(`SELECT run_id, key, value FROM ${table} WHERE run_id = ANY($1) ORDER BY key`, [[...runIds]]);
    const map = new Map<string, KeyValue[]>();
    for (const r of rows) {
      const list = map.get(r.run_id) ?? [];
      list.push({ key: r.key, value: r.value });
      map.set(r.run_id, list);
    }
    return map;
  }

  async inputsFor(runIds: readonly string[]): Promise<Map<string, RunInputView[]>> {
    const rows = await this.db
      .getRepository(RunInputRecord)
      .createQueryBuilder("i")
      .where("i.run_id = ANY(:ids)", { ids: [...runIds] })
      .orderBy("i.created_at")
      .getMany();
    const datasets = rows.length
      ? await this.db.getRepository(Dataset).createQueryBuilder("d").where("d.id = ANY(:ids)", { ids: [...new Set(rows.map((r) => r.datasetId))] }).getMany()
      : [];
    const byId = new Map(datasets.map((d) => [d.id, d]));
    const map = new Map<string, RunInputView[]>();
    for (const r of rows) {
      const list = map.get(r.runId) ?? [];
      list.push({ dataset: byId.get(r.datasetId) as Dataset, context: r.context || null });
      map.set(r.runId, list);
    }
    return map;
  }

  async byIds(ids: readonly string[]): Promise<Run[]> {
    return this.db.getRepository(Run).createQueryBuilder("r").where("r.id = ANY(:ids)", { ids: [...ids] }).getMany();
  }

  async childrenOf(runIds: readonly string[]): Promise<Map<string, Run[]>> {
    const rows = await this.db.getRepository(Run).createQueryBuilder("r").where("r.parent_run_id = ANY(:ids)", { ids: [...runIds] }).orderBy("r.start_time").getMany();
    const map = new Map<string, Run[]>();
    for (const r of rows) map.set(r.parentRunId as string, [...(map.get(r.parentRunId as string) ?? []), r]);
    return map;
  }

  /** Run search: MLflow's filter language (with OR and parentheses) and orderBy, paginated. */
  async searchRuns(
    ctx: RequestContext,
    args: { experimentIds?: string[] | null; runIds?: string[] | null; filter?: string | null; orderBy?: string[] | null } & PageArgs,
  ): Promise<Page<Run>> {
    (args.experimentIds ?? []).forEach((id, i) => validateId(id, `experimentIds[${i}]`));
    (args.runIds ?? []).forEach((id, i) => validateId(id, `runIds[${i}]`));
    return this.search.search(ctx, args);
  }

  /** One search run inside each of the experiments (for `Experiment.runs` of a list of experiments). */
  async searchRunsPerExperiment(args: { filter?: string | null; orderBy?: string[] | null } & PageArgs, experimentIds: readonly string[]): Promise<Map<string, Page<Run> | DomainError>> {
    return this.search.searchPerExperiment(null, args, experimentIds);
  }

  async publishUpdated(run: Run): Promise<void> {
    const event: RunUpdatedEvent = { runId: run.id, experimentId: run.experimentId };
    await this.bus.publish(RUN_EVENTS_TOPIC, event);
  }
}

/** A run of a deleted experiment takes no writes (as createRun refuses one), until the experiment is restored. */
function deletedExperiment(field: string, runId: string, experimentName: string): DomainError {
  return new DomainError("BAD_USER_INPUT", `${field}: run ${JSON.stringify(runId)} belongs to the deleted experiment ${JSON.stringify(experimentName)}; restore it first`, field);
}
