/**
 * Group-commit mechanics against a stand-in client (the real engine is exercised in
 * metric-store.chdb.test.ts): grouping, maxRows splits, failure propagation, dedupe lookups.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ClickHouseClient } from "@clickhouse/client";
import { InsertJournal } from "../../../src/stores/metric-store/interrupted-inserts.js";
import { batchLine, insertStatement, MetricWriter } from "../../../src/stores/metric-store/metric-writer.js";
import { validateMetricPoints } from "../../../src/stores/metric-store/metric-validation.js";

interface FakeCall {
  kind: "query" | "command";
  query: string;
}

function fakeClient(opts: { failInsert?: boolean; existing?: [string, string][]; insertMs?: number } = {}) {
  const calls: FakeCall[] = [];
  const client = {
    async command({ query }: { query: string }) {
      calls.push({ kind: "command", query });
      await new Promise((r) => setTimeout(r, opts.insertMs ?? 1));
      if (opts.failInsert) throw new Error("Code: 241. DB::Exception: Memory limit exceeded");
      return {};
    },
    async query({ query }: { query: string }) {
      calls.push({ kind: "query", query });
      return { json: async () => opts.existing ?? [] };
    },
  } as unknown as ClickHouseClient;
  return { client, calls };
}

const points = (n: number) => validateMetricPoints(Array.from({ length: n }, (_, i) => ({ key: "k", step: i, value: i })), 0);

describe("MetricWriter", () => {
  it("shares one INSERT among calls made within the window", async () => {
    const { client, calls } = fakeClient();
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 5 });
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => writer.write(`r${i}`, points(2))));
    expect(results.every((r) => r.stored === 2)).toBe(true);
    expect(calls.filter((c) => c.kind === "command")).toHaveLength(1);
    // One JSON line per caller's batch inside the INSERT's string literal: [run, batch id, keys, steps, timestamps, values].
    const literal = /FROM format\(JSONCompactEachRow, '(?:[^'\\]|\\.)*', '((?:[^'\\]|\\.)*)'\)/s.exec(calls[0].query)![1];
    const lines = literal.split("\n").map((line) => JSON.parse(line) as [string, string, string[], number[], number[], number[]]);
    expect(lines.map((l) => l[0])).toEqual(Array.from({ length: 20 }, (_, i) => `r${i}`));
    expect(lines[3]).toEqual(["r3", "", ["k", "k"], [0, 1], [0, 0], [0, 1]]);
  });

  it("escapes quotes and backslashes of ids inside the INSERT's string literal", () => {
    const statement = insertStatement([{ line: batchLine("run'\\x", "it's \\ \"q\"", validateMetricPoints([{ key: "k", step: 1, value: 2 }], 7)) }]);
    const literal = /FROM format\(JSONCompactEachRow, '(?:[^'\\]|\\.)*', '((?:[^'\\]|\\.)*)'\)/s.exec(statement)![1];
    // ClickHouse reads the literal back by dropping one backslash before each escaped character.
    expect(JSON.parse(literal.replace(/\\(.)/gs, "$1"))).toEqual(["run'\\x", "it's \\ \"q\"", ["k"], [1], [7], [2]]);
  });

  it("writes each batch's line as the JSON of [run, batch id, keys, steps, timestamps, values]", () => {
    const columns = {
      keys: ["loss", "train/acc", "a b.c-d_e", "loss"],
      steps: [0, 7, 2 ** 31, Number.MAX_SAFE_INTEGER],
      timestamps: [0, 1_700_000_000_123, 1_700_000_000_123, Date.UTC(2299, 11, 31, 23, 59, 59, 999)],
      values: [-0, 0.1 + 0.2, 1e21, -1.5e-7],
    };
    expect(batchLine("run-1", "batch-1", columns)).toBe(JSON.stringify(["run-1", "batch-1", columns.keys, columns.steps, columns.timestamps, columns.values]));
  });

  /** Runs of the batches each INSERT carried, in order. */
  const insertedRuns = (calls: FakeCall[]) =>
    calls
      .filter((c) => c.kind === "command")
      .map((c) => {
        const literal = /FROM format\(JSONCompactEachRow, '(?:[^'\\]|\\.)*', '((?:[^'\\]|\\.)*)'\)/s.exec(c.query)![1];
        return literal
          .split("\n")
          .map((line) => (JSON.parse(line) as string[])[0])
          .sort();
      });

  it("waits for the callers it just answered, so clients logging in a loop share one INSERT per round", async () => {
    const { client, calls } = fakeClient({ insertMs: 30 });
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 2 });
    // Ten clients, each sending its next batch 0-9 ms after its answer (as over HTTP: staggered).
    await Promise.all(
      Array.from({ length: 10 }, async (_, c) => {
        for (let round = 0; round < 3; round++) {
          await writer.write(`c${c}`, points(5));
          await new Promise((r) => setTimeout(r, c));
        }
      }),
    );
    // Without waiting, the early returners would make an INSERT of their own and the rest another.
    const all = Array.from({ length: 10 }, (_, c) => `c${c}`).sort();
    expect(insertedRuns(calls)).toEqual([all, all, all]);
  });

  describe("on a fake clock", () => {
    beforeEach(() => jest.useFakeTimers());
    afterEach(() => jest.useRealTimers());
    const inserts = (calls: FakeCall[]) => calls.filter((c) => c.kind === "command").length;

    /** Four callers share an INSERT of 30 ms (after the 2 ms window); resolves once they are answered. */
    async function firstRound(failInsert = false) {
      const fake = fakeClient({ insertMs: 30, failInsert });
      const writer = new MetricWriter(fake.client, {}, () => {}, { windowMs: 2 });
      const round = Promise.allSettled(Array.from({ length: 4 }, (_, c) => writer.write(`c${c}`, points(5))));
      await jest.advanceTimersByTimeAsync(2 + 30);
      await round;
      expect(inserts(fake.calls)).toBe(1);
      return { writer, calls: fake.calls };
    }

    it("waits for callers expected back as long as the last INSERT took, no longer", async () => {
      const { writer, calls } = await firstRound();
      // Only one of the four comes back.
      const again = writer.write("c0", points(5));
      await jest.advanceTimersByTimeAsync(29);
      expect(inserts(calls)).toBe(1);
      await jest.advanceTimersByTimeAsync(1);
      expect(inserts(calls)).toBe(2);
      await jest.advanceTimersByTimeAsync(30);
      await expect(again).resolves.toEqual({ stored: 5, deduplicated: false });
    });

    it("flushes a lone client's next batch at once: it is all that is expected", async () => {
      const fake = fakeClient({ insertMs: 30 });
      const writer = new MetricWriter(fake.client, {}, () => {}, { windowMs: 2 });
      const first = writer.write("solo", points(5));
      await jest.advanceTimersByTimeAsync(2 + 30);
      await first;
      const next = writer.write("solo", points(5));
      await jest.advanceTimersByTimeAsync(0);
      expect(inserts(fake.calls)).toBe(2);
      await jest.advanceTimersByTimeAsync(30);
      await expect(next).resolves.toEqual({ stored: 5, deduplicated: false });
    });

    it("expects nobody back after a pause: a call long after the last answer waits only windowMs", async () => {
      const { writer, calls } = await firstRound();
      await jest.advanceTimersByTimeAsync(1_000);
      void writer.write("c0", points(5));
      await jest.advanceTimersByTimeAsync(1);
      expect(inserts(calls)).toBe(1);
      await jest.advanceTimersByTimeAsync(1);
      expect(inserts(calls)).toBe(2);
      await jest.advanceTimersByTimeAsync(30);
    });

    it("does not wait for callers it refused", async () => {
      const { writer, calls } = await firstRound(true);
      const again = writer.write("c0", points(5)).catch((err: Error) => err);
      await jest.advanceTimersByTimeAsync(2);
      expect(inserts(calls)).toBe(2);
      await jest.advanceTimersByTimeAsync(30);
      expect(await again).toBeInstanceOf(Error);
    });
  });

  it("raises max_query_size to fit the data and max_block_size to the largest group, per INSERT", async () => {
    const settings: Record<string, unknown>[] = [];
    const queries: string[] = [];
    const client = {
      async command({ query, clickhouse_settings }: { query: string; clickhouse_settings: Record<string, unknown> }) {
        queries.push(query);
        settings.push(clickhouse_settings);
        return {};
      },
    } as unknown as ClickHouseClient;
    const writer = new MetricWriter(client, { insert_distributed_sync: 1 }, () => {}, { windowMs: 1, maxRows: 200_000 });
    await writer.write("é-run", points(10_000));
    expect(Number(settings[0].max_query_size)).toBeGreaterThanOrEqual(Buffer.byteLength(queries[0]));
    expect(settings[0]).toMatchObject({ insert_distributed_sync: 1, max_block_size: "200000" });
  });

  it("answers every caller of a failed INSERT with its error, then keeps accepting writes", async () => {
    const failing = fakeClient({ failInsert: true });
    const writer = new MetricWriter(failing.client, {}, () => {}, { windowMs: 1 });
    const settled = await Promise.allSettled([writer.write("a", points(1)), writer.write("b", points(1))]);
    expect(settled.map((s) => s.status)).toEqual(["rejected", "rejected"]);
    expect((settled[0] as PromiseRejectedResult).reason.message).toContain("Memory limit exceeded");
  });

  it("journals each INSERT's runs while it runs, and repairs their derived rows when it fails, before answering", async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-journal-")), "journal.json");
    const journal = new InsertJournal(file);
    const seenDuringInsert: string[] = [];
    let fail = true;
    const client = {
      async command() {
        seenDuringInsert.push(fs.readFileSync(file, "utf8"));
        if (fail) throw new Error("Code: 241. DB::Exception: Memory limit exceeded (in a view, after the raw part)");
        return {};
      },
      async query() {
        return { json: async () => [] };
      },
    } as unknown as ClickHouseClient;
    const repaired: string[][] = [];
    let repairFails = true;
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 1 }, {
      journal,
      repair: async (runs) => {
        repaired.push([...runs].sort());
        if (repairFails) throw new Error("ClickHouse is down");
      },
    });
    const settled = await Promise.allSettled([writer.write("a", points(1)), writer.write("b", points(1))]);
    expect(settled.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(JSON.parse(seenDuringInsert[0]!).sort()).toEqual(["a", "b"]);
    // The repair was tried and failed: the runs stay journaled for the next start.
    expect(repaired).toEqual([["a", "b"]]);
    expect(JSON.parse(fs.readFileSync(file, "utf8")).sort()).toEqual(["a", "b"]);
    // An INSERT within the backoff (1 s after a failed repair) leaves them owed...
    fail = false;
    repairFails = false;
    expect(await writer.write("d", points(1))).toEqual({ stored: 1, deduplicated: false });
    expect(repaired).toHaveLength(1);
    expect(JSON.parse(fs.readFileSync(file, "utf8")).sort()).toEqual(["a", "b"]);
    seenDuringInsert.splice(1);
    // ...the next one after it repairs them, and the journal empties.
    await new Promise((r) => setTimeout(r, 1100));
    expect(await writer.write("c", points(1))).toEqual({ stored: 1, deduplicated: false });
    expect(JSON.parse(seenDuringInsert[1]!).sort()).toEqual(["a", "b", "c"]);
    expect(repaired).toEqual([["a", "b"], ["a", "b"]]);
    expect(fs.readFileSync(file, "utf8")).toBe("");
    expect(new InsertJournal(file).recorded()).toEqual([]);
  });

  it("leaves the runs of an INSERT whose end it cannot confirm to the next start, without repairing them now", async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-journal-")), "journal.json");
    const client = {
      async command() {
        throw Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }); // the INSERT may still run
      },
      async query() {
        throw new Error("connect ECONNREFUSED"); // and the server cannot be asked
      },
    } as unknown as ClickHouseClient;
    const repaired: string[][] = [];
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 1 }, { journal: new InsertJournal(file), repair: async (runs) => void repaired.push(runs) });
    await expect(writer.write("a", points(1))).rejects.toThrow("socket hang up");
    // A repair beside an INSERT still running would count its rows twice.
    expect(repaired).toEqual([]);
    expect(new InsertJournal(file).recorded()).toEqual(["a"]);
  });

  it("flushes as soon as maxRows is reached and never splits a caller's batch", async () => {
    const { client, calls } = fakeClient();
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 10_000, maxRows: 5 });
    await Promise.all([writer.write("a", points(3)), writer.write("b", points(3)), writer.write("c", points(4))]);
    // a+b reach 6 >= 5 at once; the flush takes a (3) alone since a+b would exceed 5, then b, then c
    const inserts = calls.filter((c) => c.kind === "command");
    expect(inserts.length).toBe(3);
  });

  it("refuses a call UNAVAILABLE while more points than maxQueuedRows wait for a slow store, and takes calls again once they are stored", async () => {
    let release!: () => void;
    const slow = new Promise<void>((r) => (release = r));
    const calls: string[] = [];
    const client = {
      async command({ query }: { query: string }) {
        calls.push(query);
        await slow;
        return {};
      },
      async query() {
        return { json: async () => [] };
      },
    } as unknown as ClickHouseClient;
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 1, maxRows: 5, maxQueuedRows: 8 });
    const first = writer.write("a", points(5)); // in flight, held by the slow store
    await new Promise((r) => setTimeout(r, 20));
    const queued = writer.write("b", points(5)); // waits behind it
    await expect(writer.write("c", points(4))).rejects.toMatchObject({ code: "UNAVAILABLE" });
    release();
    await expect(Promise.all([first, queued])).resolves.toEqual([
      { stored: 5, deduplicated: false },
      { stored: 5, deduplicated: false },
    ]);
    await expect(writer.write("c", points(4))).resolves.toEqual({ stored: 4, deduplicated: false });
  });

  it("answers batches whose idempotency key is already stored without writing them", async () => {
    const { client, calls } = fakeClient({ existing: [["a", "key-1"]] });
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 1 });
    const [dup, fresh, plain] = await Promise.all([
      writer.write("a", points(2), "key-1"),
      writer.write("b", points(2), "key-1"),
      writer.write("c", points(2)),
    ]);
    expect(dup).toEqual({ stored: 0, deduplicated: true });
    expect(fresh).toEqual({ stored: 2, deduplicated: false });
    expect(plain).toEqual({ stored: 2, deduplicated: false });
    expect(calls.map((c) => c.kind)).toEqual(["query", "command"]);
  });

  it("refuses writes after close, once pending ones are flushed", async () => {
    const { client, calls } = fakeClient();
    const writer = new MetricWriter(client, {}, () => {}, { windowMs: 10_000 });
    const pending = writer.write("a", points(1));
    await writer.close();
    await expect(pending).resolves.toEqual({ stored: 1, deduplicated: false });
    expect(calls).toHaveLength(1);
    await expect(writer.write("a", points(1))).rejects.toMatchObject({ code: "UNAVAILABLE" });
  });
});
