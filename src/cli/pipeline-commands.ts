import { randomUUID } from "node:crypto";
import fs from "node:fs";
import type { Command } from "commander";
import {
  CreatePipelineDocument,
  GetPipelineRunDocument,
  GetTaskRunDocument,
  ListPipelinesDocument,
  SubmitPipelineRunDocument,
  TaskLogsDocument,
  TaskRunLogsDocument,
  isRetryable,
  type MlgraphClient,
  type SubmitPipelineRunInput,
} from "../../client/index.js";
import { action, collectRepeated, connect, keyValues, notFound, noteTruncated, printJson, printTable, readPages, usage, withConnection, type ConnectionFlags } from "./cli-support.js";
import { positiveInt } from "./runs-commands.js";

const FINAL_PIPELINE = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const FINAL_TASK = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "UPSTREAM_FAILED"]);
/** Rows per request for `pipeline list` (the server caps a page at 1,000; see readPages). */
const PIPELINE_PAGE = 500;
/** Most lines one read returns (the server's MAX_LOG_LINES_PER_READ). */
const LOG_PAGE = 10_000;
/**
 * `submit --wait` rides out a server restart or a dropped connection (retryable errors, with
 * backoff up to WAIT_RETRY_MAX_DELAY_MS); it gives up once polls have failed for this long.
 */
const WAIT_RETRY_GIVE_UP_MS = 10 * 60_000;
const WAIT_RETRY_MAX_DELAY_MS = 15_000;
/** Sends of one `submit` (the first and its resends) before a retryable failure is reported. */
const SUBMIT_ATTEMPTS = 5;

/** `mlgraph pipeline create|list|submit|status|logs`. */
export function registerPipelineCommands(program: Command): void {
  const pipeline = program.command("pipeline").description("pipelines: register specs, submit runs, follow them");

  withConnection(pipeline.command("create <file>").description("register a pipeline spec (YAML or JSON) as a new version; an unchanged spec keeps its version")).action(
    action(async (file: string, flags: ConnectionFlags) => {
      let text: string;
      try {
        text = fs.readFileSync(file, "utf8");
      } catch {
        throw usage(`${file}: cannot read the file`);
      }
      const { createPipeline } = await connect(flags).request(CreatePipelineDocument, { input: { specYaml: text } });
      if (flags.json) return printJson(createPipeline);
      process.stdout.write(`pipeline ${createPipeline.pipeline.name} version ${createPipeline.version} (${createPipeline.contentHash.slice(0, 12)})\n`);
    }),
  );

  withConnection(pipeline.command("list").description("list pipelines").option("--limit <n>", "at most this many", "50")).action(
    action(async (flags: ConnectionFlags & { limit: string }) => {
      const limit = positiveInt("--limit", flags.limit);
      const client = connect(flags);
      const result = await readPages(limit, PIPELINE_PAGE, async (first, after) => {
        const { pipelines } = await client.request(ListPipelinesDocument, { first, after });
        return { rows: pipelines.edges.map((e) => e.node), ...pipelines.pageInfo };
      });
      noteTruncated("pipelines", result);
      const rows = result.rows;
      if (flags.json) return printJson(rows);
      printTable(["NAME", "VERSION", "UPDATED", "DESCRIPTION"], rows.map((p) => [p.name, p.latestVersion.version, p.updatedAt, p.description]));
    }),
  );

  withConnection(
    pipeline
      .command("submit <name>")
      .alias("run")
      .description("start a run of a pipeline")
      .option("-p, --param <key=value>", "a pipeline parameter (repeatable)", collectRepeated)
      .option("--version <n>", "pipeline version (default: latest)")
      .option("--priority <n>", "higher runs first")
      .option("--wait", "wait until the run ends; exit 1 unless it SUCCEEDED"),
  ).action(
    action(async (name: string, flags: ConnectionFlags & { param?: string[]; version?: string; priority?: string; wait?: boolean }) => {
      const client = connect(flags);
      const params = keyValues("--param", flags.param);
      // Checked here: Number("high") is NaN, which JSON sends as null, i.e. the default priority.
      const version = flags.version === undefined ? undefined : positiveInt("--version", flags.version);
      const priority = flags.priority === undefined ? undefined : integer("--priority", flags.priority);
      const run = await submitOnce(client, { pipelineName: name, params, version, priority });
      if (!flags.wait) {
        if (flags.json) return printJson(run);
        process.stdout.write(`submitted pipeline run ${run.id} (${run.pipelineName} v${run.pipelineVersion.version}), status ${run.status}\n`);
        return;
      }
      const final = await waitForPipelineRun(client, run.id, flags.json !== true);
      if (flags.json) printJson(final);
      else printPipelineRun(final);
      if (final.status !== "SUCCEEDED") process.exit(1);
    }),
  );

  withConnection(pipeline.command("status <pipeline-run-id>").description("a pipeline run and its tasks")).action(
    action(async (id: string, flags: ConnectionFlags) => {
      const { pipelineRun } = await connect(flags).request(GetPipelineRunDocument, { id });
      if (!pipelineRun) throw notFound(`pipeline run ${id} not found`);
      if (flags.json) return printJson(pipelineRun);
      printPipelineRun(pipelineRun);
    }),
  );

  withConnection(
    pipeline
      .command("logs <task-run-id>")
      .description("a task run's log lines (see `pipeline status` for task run ids)")
      .option("-f, --follow", "keep streaming new lines until the task ends")
      .option("--from-line <n>", "start at this line (0-based)", "0"),
    false,
  ).action(
    action(async (taskRunId: string, flags: ConnectionFlags & { follow?: boolean; fromLine: string }) => {
      const client = connect(flags);
      const fromLine = Number(flags.fromLine);
      if (!Number.isInteger(fromLine) || fromLine < 0) throw usage(`--from-line: expected a non-negative integer, got ${JSON.stringify(flags.fromLine)}`);
      if (!flags.follow) {
        // One read returns at most LOG_PAGE lines: page until the line count the task had when
        // the command started (lines written after are for --follow).
        let next = fromLine;
        let end: number | undefined;
        for (;;) {
          const { taskRun } = await client.request(TaskRunLogsDocument, { id: taskRunId, fromLine: next, limit: LOG_PAGE });
          if (!taskRun) throw notFound(`task run ${taskRunId} not found`);
          end ??= taskRun.logLines;
          if (taskRun.logs.length > 0) process.stdout.write(taskRun.logs.join("\n") + "\n");
          next += taskRun.logs.length;
          if (taskRun.logs.length === 0 || next >= end) return;
        }
      }
      await followLogs(client, taskRunId, fromLine);
    }),
  );
}

type PipelineRunView = NonNullable<Awaited<ReturnType<typeof fetchRun>>>;
const fetchRun = async (client: MlgraphClient, id: string) => (await client.request(GetPipelineRunDocument, { id })).pipelineRun;

function printPipelineRun(run: PipelineRunView): void {
  const out = process.stdout;
  out.write(`pipeline run ${run.id}\npipeline     ${run.pipelineName} v${run.pipelineVersion.version}\nstatus       ${run.status} (${run.tasksDone}/${run.tasksTotal} tasks done)\n`);
  out.write(`params       ${JSON.stringify(run.params)}\ncreated      ${run.createdAt}\nfinished     ${run.finishedAt ?? "-"}\n`);
  if (run.error) out.write(`error        ${run.error}\n`);
  if (run.registeredModelVersion) out.write(`registered   ${run.registeredModelVersion.model.name} v${run.registeredModelVersion.version}\n`);
  out.write("\n");
  printTable(
    ["TASK", "STATUS", "ATTEMPT", "POOL", "EXIT", "TASK RUN ID", "ERROR"],
    run.tasks.map((t) => [t.taskId, t.status, `${t.attempt}/${t.maxAttempts}`, t.pool, t.exitCode, t.id, t.error?.split("\n")[0]]),
  );
}

/**
 * Submits with a fresh idempotency key and resends it (same key) after a retryable failure, a few
 * times with backoff: a submission whose answer was lost is answered with the run it started, so
 * a blip never starts the pipeline twice.
 */
async function submitOnce(client: MlgraphClient, input: Omit<SubmitPipelineRunInput, "idempotencyKey">) {
  const keyed = { ...input, idempotencyKey: randomUUID() };
  for (let retries = 0; ; retries++) {
    try {
      return (await client.request(SubmitPipelineRunDocument, { input: keyed })).submitPipelineRun;
    } catch (err) {
      if (!isRetryable(err) || retries + 1 >= SUBMIT_ATTEMPTS) throw err;
      await backoff(retries);
    }
  }
}

/** Waits before retry number `retries` + 1: doubling from 0.5 s up to WAIT_RETRY_MAX_DELAY_MS, jittered. */
function backoff(retries: number): Promise<void> {
  const cap = Math.min(WAIT_RETRY_MAX_DELAY_MS, 500 * 2 ** Math.min(retries, 10));
  return new Promise((r) => setTimeout(r, cap / 2 + Math.random() * (cap / 2)));
}

async function waitForPipelineRun(client: MlgraphClient, id: string, progress: boolean): Promise<PipelineRunView> {
  let lastLine = "";
  let failingSince: number | undefined;
  let retries = 0;
  for (;;) {
    let run: Awaited<ReturnType<typeof fetchRun>>;
    try {
      run = await fetchRun(client, id);
    } catch (err) {
      // A pipeline can run for hours; a server restart or a dropped connection meanwhile is no
      // reason to stop waiting for it (the run goes on without us).
      const now = Date.now();
      failingSince ??= now;
      if (!isRetryable(err) || now - failingSince > WAIT_RETRY_GIVE_UP_MS) throw err;
      if (progress && retries === 0) process.stderr.write(`pipeline run ${id}: ${err instanceof Error ? err.message : String(err)}; retrying\n`);
      await backoff(retries++);
      continue;
    }
    if (progress && failingSince !== undefined) process.stderr.write(`pipeline run ${id}: reachable again\n`);
    failingSince = undefined;
    retries = 0;
    if (!run) throw notFound(`pipeline run ${id} not found`);
    const line = `${run.status} ${run.tasksDone}/${run.tasksTotal}`;
    if (progress && line !== lastLine) process.stderr.write(`pipeline run ${id}: ${line}\n`);
    lastLine = line;
    if (FINAL_PIPELINE.has(run.status)) return run;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Streams lines over the taskLogs subscription (replaying from fromLine) until the task ends. */
async function followLogs(client: MlgraphClient, taskRunId: string, fromLine: number): Promise<void> {
  const { taskRun } = await client.request(GetTaskRunDocument, { id: taskRunId });
  if (!taskRun) throw notFound(`task run ${taskRunId} not found`);
  const stream = client.subscribe(TaskLogsDocument, { taskRunId, fromLine });
  let next = fromLine;
  // The subscription carries lines, not the task's end: check the status alongside and stop once
  // the task is final and every line it wrote has been printed.
  const watcher = setInterval(() => {
    void client.request(GetTaskRunDocument, { id: taskRunId }).then(({ taskRun: t }) => {
      if (!t || (FINAL_TASK.has(t.status) && next >= t.logLines)) stream.close();
    }, () => undefined);
  }, 1000);
  try {
    for await (const batch of stream) {
      for (let i = 0; i < batch.taskLogs.lines.length; i++) {
        const lineNo = batch.taskLogs.fromLine + i;
        if (lineNo < next) continue;
        process.stdout.write(batch.taskLogs.lines[i] + "\n");
        next = lineNo + 1;
      }
    }
  } finally {
    clearInterval(watcher);
    await client.close();
  }
}

/** A whole number, negative allowed (priorities are); the server checks the range. */
function integer(flag: string, text: string): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isSafeInteger(n)) throw usage(`${flag}: expected an integer, got ${JSON.stringify(text)}`);
  return n;
}
