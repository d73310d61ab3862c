/**
 * Shared helpers of the metric benchmarks. Build: `npx tsc -p tsconfig.json && npx tsc -p bench`,
 * then run `node dist-bench/bench/<name>.js`. Each bench starts its own server (the built
 * dist/src/main.js, as the e2e tests do) and prints its figures beside a baseline of the same run.
 */
import { execFileSync } from "node:child_process";
import http from "node:http";
import { ok, sleep, startTestServer, type TestServer } from "../test/helpers/test-server.js";

export { ok, sleep, startTestServer, type TestServer };

/** Seconds a sustained phase runs; BENCH_SECONDS shortens or lengthens every bench. */
export const benchSeconds = (fallback: number) => Number(process.env.BENCH_SECONDS ?? fallback);

/**
 * Lets the filesystem settle before an engine is measured: flushes dirty blocks, then waits
 * BENCH_SETTLE_SECONDS (default 65; 0 skips). On ext4 without a journal (this VM's root
 * filesystem) creating a file skips, one by one, every inode of its group freed in the last 60 s
 * (6 minutes while the inode table is unflushed). Right after a mass deletion (an `npm ci`, a test
 * run, the last bench's data) a 1-row MergeTree INSERT took 13 ms instead of 3, so figures
 * depended on what ran in the minutes before. Both the direct and the GraphQL phases run after it.
 */
export async function settleFilesystem(): Promise<void> {
  const given = process.env.BENCH_SETTLE_SECONDS ?? "65";
  const seconds = Number(given);
  if (given.trim() === "" || !(seconds >= 0 && seconds <= 3600)) throw new Error(`BENCH_SETTLE_SECONDS: expected 0 to 3600 seconds, got ${JSON.stringify(given)}`);
  if (seconds === 0) return;
  execFileSync("sync");
  console.log(`settling: sync, then ${seconds} s without deleting files (BENCH_SETTLE_SECONDS=0 skips)`);
  await sleep(seconds * 1000);
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** Milliseconds `fn` took. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

export const ms = (n: number) => `${n.toFixed(1)} ms`;
export const rate = (n: number) => `${Math.round(n).toLocaleString("en-US")}/s`;

export async function createRuns(server: TestServer, count: number, name: string): Promise<string[]> {
  const exp = ok(await server.gql(`mutation($n: String!) { createExperiment(input: {name: $n}) { id } }`, { n: name })).createExperiment.id as string;
  const ids: string[] = [];
  for (let i = 0; i < count; i += 20) {
    const chunk = await Promise.all(
      Array.from({ length: Math.min(20, count - i) }, async (_, j) =>
        ok(await server.gql(`mutation($e: ID!, $n: String!) { createRun(input: {experimentId: $e, name: $n, params: [{key: "i", value: $n}]}) { id } }`, { e: exp, n: `r${i + j}` }))
          .createRun.id as string,
      ),
    );
    ids.push(...chunk);
  }
  return ids;
}

export const LOG_COLUMNS = `mutation($run: ID!, $keys: StringColumn!, $steps: SafeIntColumn!, $values: FloatColumn!, $ts: SafeIntColumn) {
  logMetricColumns(runId: $run, keys: $keys, steps: $steps, values: $values, timestamps: $ts) { accepted } }`;
/** Logs a `loss` series of `points` steps (0, 1, 2, …) to `run` in 10,000-point batches, four in flight. */
export async function logLossSeries(server: TestServer, run: string, points: number, value: (step: number) => number): Promise<void> {
  const keys = new Array<string>(10_000).fill("loss");
  for (let b = 0; b < points / 10_000; b += 4) {
    await Promise.all(
      [0, 1, 2, 3]
        .filter((k) => b + k < points / 10_000)
        .map(async (k) => {
          const steps = Array.from({ length: 10_000 }, (_, i) => (b + k) * 10_000 + i);
          ok(await server.gql(LOG_COLUMNS, { run, keys, steps, values: steps.map(value) }));
        }),
    );
  }
}

export const LOG_POINTS = `mutation($run: ID!, $points: [MetricPointInput!]!) { logMetrics(runId: $run, points: $points) { accepted } }`;

export function machine(): string {
  const os = require("node:os") as typeof import("node:os");
  return `${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.cpus()[0]?.model ?? "?"}`;
}

/**
 * A JSON POSTer over keep-alive `node:http` sockets, for load generators that share the machine
 * with the server under test: it spends about 0.25 ms of CPU per 40 KB request where `fetch`
 * (undici) spends about 1.5 ms (measured here), CPU the server would otherwise have had.
 * Rejects on a non-2xx status, an unparseable answer, or no answer in 120 s.
 */
export function jsonPoster(url: string, maxSockets: number): (body: string) => Promise<unknown> {
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  return (body) =>
    new Promise((resolve, reject) => {
      const req = http.request(url, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          if ((res.statusCode ?? 0) >= 300) return reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 500)}`));
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(err);
          }
        });
        res.on("error", reject);
      });
      req.setTimeout(120_000, () => req.destroy(new Error("no answer in 120 s")));
      req.on("error", reject);
      req.end(body);
    });
}
