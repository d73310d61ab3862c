import type { DataSource } from "typeorm";
import { Run } from "../entities/run.entity.js";
import type { RequestContext } from "./context.js";
import { DomainError } from "./errors.js";
import { pageWindow, toPage, type Page, type PageArgs } from "./pagination.js";
import { decodeRunCursor, encodeRunCursor, orderSignature, seekCondition, sortKeyCursorSql } from "./run-search-cursor.js";
import {
  compileFilter,
  compileOrderBy,
  DEFAULT_RUN_ORDER_BY,
  parseFilter,
  parseOrderBy,
  type MetricLastValuesResolver,
  type MetricTermResolver,
} from "./run-filter/index.js";

/**
 * Where metric terms are answered (the metric store, on last values). Absent until a metric
 * store is configured; then `metrics.*` terms answer "not supported yet".
 */
export interface MetricSearchHooks {
  /** At most `limit` runs (any of them) when `restrictTo` is absent. */
  runIdsMatching(restrictTo: string[] | undefined, key: string, op: string, value: number, limit?: number): Promise<string[]>;
  /** At most `limit` runs (any of them) when `runIds` is absent. */
  lastValues(runIds: string[] | undefined, key: string, limit?: number): Promise<Map<string, number>>;
}

/**
 * How many runs a `metrics.*` term may reach when the search names no experiments (nor runs):
 * the metric store's answer (run ids, or last values) is held in memory and sent on to
 * PostgreSQL, so a key logged by every run of a large instance must be narrowed first (MLflow
 * always asks for experiment ids).
 */
export const MAX_RUNS_FOR_UNSCOPED_METRIC_TERM = 100_000;

export type RunSearchArgs = { experimentIds?: string[] | null; runIds?: string[] | null; filter?: string | null; orderBy?: string[] | null } & PageArgs;

/** The key of the single page of an ordinary search. */
const ALL = "";

/** SQL condition: run `r` is not in a deleted experiment. */
const LIVE_EXPERIMENT = "NOT EXISTS (SELECT 1 FROM experiments e WHERE e.id = r.experiment_id AND e.deleted_at IS NOT NULL)";

/** Run search over PostgreSQL; the filter language is compiled to parameterised SQL. */
export class RunSearch {
  private metrics?: MetricSearchHooks;

  constructor(private readonly db: DataSource) {}

  /** Plugs in the metric store for `metrics.*` filter and orderBy terms. */
  useMetrics(metrics: MetricSearchHooks): void {
    this.metrics = metrics;
  }

  async search(_ctx: RequestContext, args: RunSearchArgs): Promise<Page<Run>> {
    const page = (await this.searchPages(args, false)).get(ALL)!;
    if (page instanceof Error) throw page;
    return page;
  }

  /**
   * The same search run separately inside each experiment, as one statement (a window per
   * experiment): `experiments { runs(...) }` costs one search, not one per experiment.
   */
  async searchPerExperiment(_ctx: RequestContext | null, args: Omit<RunSearchArgs, "experimentIds">, experimentIds: readonly string[]): Promise<Map<string, Page<Run> | DomainError>> {
    return this.searchPages({ ...args, experimentIds: [...experimentIds] }, true);
  }

  private async searchPages(args: RunSearchArgs, perExperiment: boolean): Promise<Map<string, Page<Run> | DomainError>> {
    const ast = parseFilter(args.filter ?? "");
    const orderTerms = parseOrderBy(args.orderBy?.length ? args.orderBy : DEFAULT_RUN_ORDER_BY);
    const signature = orderSignature(orderTerms);
    const params: unknown[] = [];
    // A deleted experiment's runs are hidden with it (as in MLflow), and come back when it is restored.
    const where: string[] = ["r.deleted_at IS NULL", LIVE_EXPERIMENT];
    const experimentIds = args.experimentIds?.length ? args.experimentIds : undefined;
    if (experimentIds) {
      params.push(experimentIds);
      where.push(`r.experiment_id = ANY($${params.length}::uuid[])`);
    }
    // Only these runs (the approval checks evaluate a threshold on one run): the metric store is
    // then asked about them alone, not about every run that logged the key.
    const runIds = args.runIds ? [...new Set(args.runIds.map((id) => id.toLowerCase()))] : undefined;
    if (runIds) {
      params.push(runIds);
      where.push(`r.id = ANY($${params.length}::uuid[])`);
    }
    // The runs a metric-store lookup is restricted to: those named, else the experiments' runs.
    const restrictTo = async () => runIds ?? (experimentIds ? await this.runIdsOf(experimentIds) : undefined);
    const metrics = this.metrics;
    const cap = MAX_RUNS_FOR_UNSCOPED_METRIC_TERM;
    // Only unscoped reads are capped: a scoped one is as large as the runs it names.
    const bounded = <T extends { length?: number; size?: number }>(found: T, key: string, field: "filter" | "orderBy"): T => {
      if ((found.length ?? found.size ?? 0) > cap) {
        throw new DomainError(
          "BAD_USER_INPUT",
          `${field}: metrics.${key} reaches more than ${cap.toLocaleString("en-US")} runs across all experiments; give experimentIds to search within them`,
          field,
        );
      }
      return found;
    };
    const resolveMetricTerm: MetricTermResolver | undefined = metrics
      ? async (term) => {
          const scope = await restrictTo();
          if (scope !== undefined) return metrics.runIdsMatching(scope, term.key, term.op, term.value);
          return bounded(await metrics.runIdsMatching(undefined, term.key, term.op, term.value, cap + 1), term.key, "filter");
        }
      : undefined;
    const resolveMetricLastValues: MetricLastValuesResolver | undefined = metrics
      ? async (key) => {
          const scope = await restrictTo();
          if (scope !== undefined) return metrics.lastValues(scope, key);
          return bounded(await metrics.lastValues(undefined, key, cap + 1), key, "orderBy");
        }
      : undefined;
    const filter = await compileFilter(ast, { paramOffset: params.length, resolveMetricTerm });
    params.push(...filter.params);
    where.push(filter.sql);
    const order = await compileOrderBy(orderTerms, { paramOffset: params.length, resolveMetricLastValues });
    params.push(...order.params);
    const seekFrom = decodeRunCursor(args.after, signature, order.keys);
    // A key cursor pages by key; an offset cursor (handed out before) still pages by offset.
    const window = pageWindow(seekFrom ? { first: args.first } : args);
    if (seekFrom) {
      where.push(seekCondition(order.keys, seekFrom.values, (value) => (params.push(value), `$${params.length}`)));
      // Experiment.runs: the cursor continues its own experiment's list; in another experiment its
      // sort values would skip runs (that experiment's page is refused, below).
      if (perExperiment) {
        params.push(seekFrom.experimentId);
        where.push(`r.experiment_id = $${params.length}::uuid`);
      }
    }
    const keyColumns = order.keys.map((k, i) => `${sortKeyCursorSql(k)} AS k${i}`).join(", ");
    params.push(window.limit + 1, window.offset);
    const [limitParam, offsetParam] = [`$${params.length - 1}`, `$${params.length}`];
    // One experiment's page is the plain query (LIMIT lets PostgreSQL stop early through the
    // (experiment_id, start_time) index); a window per experiment only when there are several.
    const windowed = perExperiment && (experimentIds?.length ?? 0) > 1;
    const rows: ({ id: string; experiment_id: string } & Record<`k${number}`, string | null>)[] = windowed
      ? await this.db.query(
          `SELECT * FROM (
             SELECT r.id, r.experiment_id, ${keyColumns}, row_number() OVER (PARTITION BY r.experiment_id ORDER BY ${order.orderBy}) AS n
               FROM runs r ${order.joins.join(" ")}
              WHERE ${where.join(" AND ")}) ranked
            WHERE n > ${offsetParam} AND n <= ${offsetParam} + ${limitParam}
            ORDER BY experiment_id, n`,
          params,
        )
      : await this.db.query(
          `SELECT r.id, r.experiment_id, ${keyColumns} FROM runs r ${order.joins.join(" ")}
            WHERE ${where.join(" AND ")}
            ORDER BY ${order.orderBy}
            LIMIT ${limitParam} OFFSET ${offsetParam}`,
          params,
        );
    const runs = rows.length ? await this.db.getRepository(Run).createQueryBuilder("r").where("r.id = ANY(:ids)", { ids: rows.map((r) => r.id) }).getMany() : [];
    const byId = new Map(runs.map((r) => [r.id, r]));
    const groups = new Map<string, { runs: Run[]; cursors: string[] }>(perExperiment ? (experimentIds ?? []).map((id) => [id, { runs: [], cursors: [] }]) : [[ALL, { runs: [], cursors: [] }]]);
    for (const row of rows) {
      const group = groups.get(perExperiment ? row.experiment_id : ALL);
      group?.runs.push(byId.get(row.id) as Run);
      group?.cursors.push(encodeRunCursor(signature, row.experiment_id, order.keys.map((_, i) => row[`k${i}`])));
    }
    return new Map(
      [...groups].map(([key, group]): [string, Page<Run> | DomainError] => {
        if (perExperiment && seekFrom && key !== seekFrom.experimentId.toLowerCase()) {
          return [key, new DomainError("BAD_USER_INPUT", `after: this cursor continues the runs of experiment ${JSON.stringify(seekFrom.experimentId)}, not of ${JSON.stringify(key)}`, "after")];
        }
        const page = toPage(group.runs, window);
        return [key, { ...page, cursors: group.cursors.slice(0, page.items.length), ...(seekFrom ? { hasPreviousPage: true } : {}) }];
      }),
    );
  }

  private async runIdsOf(experimentIds: string[]): Promise<string[]> {
    const rows: { id: string }[] = await this.db.query(`SELECT r.id FROM runs r WHERE r.experiment_id = ANY($1::uuid[]) AND r.deleted_at IS NULL AND ${LIVE_EXPERIMENT}`, [experimentIds]);
    return rows.map((r) => r.id);
  }
}
