import type { Command } from "commander";
import {
  CompareRunsDocument,
  GetExperimentDocument,
  GetRunDocument,
  ListExperimentsDocument,
  ListRunsDocument,
  MetricsLoggedDocument,
  RunUpdatedDocument,
  type MlgraphClient,
} from "../../client/index.js";
import { action, collectRepeated, connect, formatNumber, notFound, noteTruncated, printJson, printTable, readPages, usage, withConnection, type ConnectionFlags } from "./cli-support.js";
import { PrintedPoints } from "./printed-points.js";

/**
 * Rows per request, under the server's default complexity limit (see readPages): a run row carries
 * params, tags and metric summaries (~925 each), an experiment row ~265.
 */
const RUN_PAGE = 200;
const EXPERIMENT_PAGE = 500;

/** `mlgraph experiments list`. */
export function registerExperimentCommands(program: Command): void {
  const experiments = program.command("experiments").description("experiments (named groups of runs)");
  withConnection(
    experiments
      .command("list")
      .description("list experiments, newest first")
      .option("--limit <n>", "at most this many", "50")
      .option("--deleted", "include soft-deleted experiments"),
  ).action(
    action(async (flags: ConnectionFlags & { limit: string; deleted?: boolean }) => {
      const limit = positiveInt("--limit", flags.limit);
      const client = connect(flags);
      const result = await readPages(limit, EXPERIMENT_PAGE, async (first, after) => {
        const { experiments: page } = await client.request(ListExperimentsDocument, { first, after, includeDeleted: flags.deleted ?? false });
        return { rows: page.edges.map((e) => e.node), ...page.pageInfo, totalCount: page.totalCount };
      });
      noteTruncated("experiments", result);
      const rows = result.rows;
      if (flags.json) return printJson(rows);
      printTable(["ID", "NAME", "CREATED", "TAGS"], rows.map((x) => [x.id, x.name, x.createdAt, x.tags.map((t) => `${t.key}=${t.value}`).join(",")]));
    }),
  );
}

/** `mlgraph runs list|show|compare|watch`. */
export function registerRunCommands(program: Command): void {
  const runs = program.command("runs").description("tracking runs: search, inspect, compare, watch live");

  withConnection(
    runs
      .command("list")
      .description("search runs (newest first unless --order-by)")
      .option("-e, --experiment <name-or-id...>", "only these experiments")
      .option("-f, --filter <expr>", `e.g. "metrics.val_loss < 0.3 and params.lr = '0.01'"`)
      .option("-o, --order-by <expr>", 'e.g. "metrics.val_loss ASC" (repeatable)', collectRepeated)
      .option("--limit <n>", "at most this many", "50"),
  ).action(
    action(async (flags: ConnectionFlags & { experiment?: string[]; filter?: string; orderBy?: string[]; limit: string }) => {
      const limit = positiveInt("--limit", flags.limit);
      const client = connect(flags);
      const experimentIds = flags.experiment ? await Promise.all(flags.experiment.map((e) => experimentId(client, e))) : undefined;
      const result = await readPages(limit, RUN_PAGE, async (first, after) => {
        const { runs: page } = await client.request(ListRunsDocument, { experimentIds, filter: flags.filter, orderBy: flags.orderBy, first, after });
        return { rows: page.edges.map((e) => e.node), ...page.pageInfo, totalCount: page.totalCount };
      });
      noteTruncated("runs", result);
      const rows = result.rows;
      if (flags.json) return printJson(rows);
      const metricKeys = [...new Set(rows.flatMap((r) => r.metrics.map((m) => m.key)))].sort().slice(0, 6);
      printTable(
        ["ID", "NAME", "EXPERIMENT", "STATUS", "STARTED", ...metricKeys],
        rows.map((r) => [r.id, r.name, r.experiment.name, r.status, r.startTime, ...metricKeys.map((k) => r.metrics.find((m) => m.key === k)?.summary.last)]),
      );
    }),
  );

  withConnection(runs.command("show <run-id>").description("one run: params, tags and metric summaries")).action(
    action(async (id: string, flags: ConnectionFlags) => {
      const { run } = await connect(flags).request(GetRunDocument, { id });
      if (!run) throw notFound(`run ${id} not found`);
      if (flags.json) return printJson(run);
      const out = process.stdout;
      out.write(`run        ${run.id}\nname       ${run.name}\nexperiment ${run.experiment.name} (${run.experiment.id})\nstatus     ${run.status}\n`);
      out.write(`started    ${run.startTime}\nended      ${run.endTime ?? "-"}\n`);
      if (run.parentRun) out.write(`parent     ${run.parentRun.name} (${run.parentRun.id})\n`);
      out.write("\nparams\n");
      printTable(["KEY", "VALUE"], run.params.map((p) => [p.key, p.value]));
      if (run.tags.length > 0) {
        out.write("\ntags\n");
        printTable(["KEY", "VALUE"], run.tags.map((t) => [t.key, t.value]));
      }
      out.write("\nmetrics\n");
      printTable(["KEY", "LAST", "MIN", "MAX", "STEP", "COUNT"], run.metrics.map((m) => [m.key, m.summary.last, m.summary.min, m.summary.max, m.summary.lastStep, m.summary.count]));
    }),
  );

  withConnection(
    runs
      .command("compare <run-ids...>")
      .description("runs side by side: last/min/max per metric, params that differ, differences to a baseline")
      .option("-m, --metric <key...>", "only these metrics")
      .option("-b, --baseline <run-id>", "show each run's difference to this run (default: the first)"),
  ).action(
    action(async (runIds: string[], flags: ConnectionFlags & { metric?: string[]; baseline?: string }) => {
      if (runIds.length < 2) throw usage("compare needs at least two run ids");
      const baselineRunId = flags.baseline ?? runIds[0];
      const { compareRuns } = await connect(flags).request(CompareRunsDocument, { runIds, metricKeys: flags.metric, baselineRunId });
      if (flags.json) return printJson(compareRuns);
      const params = compareRuns.differingParams;
      const rows = compareRuns.rows.map((row) => {
        const run = compareRuns.runs.find((r) => r.id === row.run.id);
        const paramCells = params.map((k) => run?.params.find((p) => p.key === k)?.value);
        const metricCells = row.metrics.map((m) => {
          if (!m.summary) return null;
          const diff = m.diffFromBaseline;
          return row.run.id === baselineRunId || diff === null || diff === undefined ? formatNumber(m.summary.last) : `${formatNumber(m.summary.last)} (${diff >= 0 ? "+" : ""}${formatNumber(diff)})`;
        });
        return [row.run.id === baselineRunId ? `${row.run.name} *` : row.run.name, row.run.id, ...paramCells, ...metricCells];
      });
      printTable(["RUN", "ID", ...params.map((p) => `params.${p}`), ...compareRuns.metricKeys], rows);
      process.stdout.write(`\n* baseline; metrics show the last value (difference to the baseline)\n`);
    }),
  );

  withConnection(
    runs
      .command("watch <run-id>")
      .description("stream a run's metrics live until it ends (Ctrl-C to stop)")
      .option("-m, --metric <key...>", "only these metrics")
      .option("--from-step <n>", "first replay the points logged from this step"),
  ).action(
    action(async (runId: string, flags: ConnectionFlags & { metric?: string[]; fromStep?: string }) => {
      const client = connect(flags);
      const fromStep = flags.fromStep === undefined ? undefined : nonNegativeInt("--from-step", flags.fromStep);
      // Listening for the run's end before reading its status: a run ending in between is seen.
      const updates = client.subscribe(RunUpdatedDocument, { runId });
      const ended = (async () => {
        for await (const u of updates) if (u.runUpdated.status !== "RUNNING") return u.runUpdated.status;
        return undefined;
      })();
      ended.catch(() => undefined); // handled below; never an unhandled rejection meanwhile
      let finalStatus: string | undefined;
      let failure: unknown;
      try {
        const { run } = await client.request(GetRunDocument, { id: runId });
        if (!run) throw notFound(`run ${runId} not found`);
        if (!flags.json) process.stderr.write(`watching ${run.name} (${run.id}), status ${run.status}\n`);
        const alreadyEnded = run.status !== "RUNNING";
        if (alreadyEnded && fromStep === undefined) {
          if (!flags.json) process.stderr.write(`run already ${run.status}\n`);
          return;
        }
        const points = client.subscribe(MetricsLoggedDocument, { runId, keys: flags.metric, fromStep });
        // After a reconnect graphql-ws resubscribes with the same fromStep and the server replays
        // everything from it again: what was printed already is skipped (see PrintedPoints).
        const printed = fromStep === undefined ? undefined : new PrintedPoints();
        // The watch ends with the run (its last points get half a second), with a failure of the
        // status stream, or, for a run that had already ended, once its replay has gone quiet.
        ended.then(
          (status) => {
            finalStatus ??= status;
            setTimeout(() => points.close(), 500);
          },
          (err: unknown) => {
            failure = err;
            points.close();
          },
        );
        const subscribedAt = Date.now();
        let lastBatchAt: number | undefined;
        let rechecked = false;
        const quiet = setInterval(() => {
          const silentFor = Date.now() - (lastBatchAt ?? subscribedAt);
          // A finished run's replay arrives page after page; 3 s without one means it is over.
          if (alreadyEnded && silentFor > (lastBatchAt === undefined ? 10_000 : 3000)) {
            finalStatus ??= run.status;
            points.close();
          }
          // The status stream is opened lazily: a run that ended before it was listening would
          // never be reported. Its status is read once more when the streams have had time to open.
          if (!alreadyEnded && !rechecked && Date.now() - subscribedAt > 3000) {
            rechecked = true;
            client.request(GetRunDocument, { id: runId }).then(
              ({ run: now }) => {
                if (now && now.status !== "RUNNING") {
                  finalStatus ??= now.status;
                  setTimeout(() => points.close(), 500);
                }
              },
              () => undefined,
            );
          }
        }, 250);
        try {
          for await (const batch of points) {
            lastBatchAt = Date.now();
            for (const p of batch.metricsLogged.points) {
              if (printed && !printed.firstTime(p)) continue;
              if (flags.json) process.stdout.write(JSON.stringify(p) + "\n");
              else process.stdout.write(`${p.timestamp}  step ${String(p.step).padStart(6)}  ${p.key} = ${formatNumber(p.value)}\n`);
            }
          }
        } finally {
          clearInterval(quiet);
        }
        if (failure) throw failure;
        if (!flags.json && finalStatus) process.stderr.write(`run ${finalStatus}\n`);
      } finally {
        updates.close();
        await client.close();
      }
    }),
  );
}

async function experimentId(client: MlgraphClient, nameOrId: string): Promise<string> {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(nameOrId);
  const { experiment } = await client.request(GetExperimentDocument, uuid ? { id: nameOrId } : { name: nameOrId });
  if (!experiment) throw notFound(`experiment ${JSON.stringify(nameOrId)} not found`);
  return experiment.id;
}

export function positiveInt(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw usage(`${flag}: expected a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

export function nonNegativeInt(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw usage(`${flag}: expected a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}
