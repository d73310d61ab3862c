import { EventEmitter, on } from "node:events";
import { GraphQLInt, GraphQLObjectType, GraphQLSchema, GraphQLString, parse, type ExecutionResult } from "graphql";
import { createSharedSubscribe } from "../../../src/server/shared-subscription-results.js";

/** A schema whose subscription streams the objects emitted on `bus`, counting field executions. */
function setup() {
  const bus = new EventEmitter();
  let executions = 0;
  let open = 0;
  const Tick = new GraphQLObjectType({
    name: "Tick",
    fields: {
      n: { type: GraphQLInt },
      label: { type: GraphQLString, args: { prefix: { type: GraphQLString } }, resolve: (t: { n: number }, args: { prefix?: string }) => (executions++, `${args.prefix ?? ""}${t.n}`) },
    },
  });
  const schema = new GraphQLSchema({
    query: new GraphQLObjectType({ name: "Query", fields: { ok: { type: GraphQLInt, resolve: () => 1 } } }),
    subscription: new GraphQLObjectType({
      name: "Subscription",
      fields: {
        ticks: {
          type: Tick,
          subscribe: async function* () {
            open++;
            try {
              for await (const [tick] of on(bus, "tick")) yield tick;
            } finally {
              open--;
            }
          },
          resolve: (tick: unknown) => tick,
        },
      },
    }),
  });
  return { bus, schema, executions: () => executions, open: () => open };
}

const ctx = (role: string) => ({ principal: { role } });

describe("shared subscription results", () => {
  it("executes an event once for subscribers with the same operation, role and variables", async () => {
    const { bus, schema, executions, open } = setup();
    const subscribe = createSharedSubscribe();
    const text = `subscription($p: String) { ticks { n label(prefix: $p) } }`;
    const a = (await subscribe({ schema, document: parse(text), variableValues: { p: "#" }, contextValue: ctx("viewer") })) as AsyncIterableIterator<ExecutionResult>;
    const b = (await subscribe({ schema, document: parse(text), variableValues: { p: "#" }, contextValue: ctx("viewer") })) as AsyncIterableIterator<ExecutionResult>;
    const c = (await subscribe({ schema, document: parse(text), variableValues: { p: "n=" }, contextValue: ctx("viewer") })) as AsyncIterableIterator<ExecutionResult>;
    const d = (await subscribe({ schema, document: parse(text), variableValues: { p: "#" }, contextValue: ctx("admin") })) as AsyncIterableIterator<ExecutionResult>;
    const next = [a.next(), b.next(), c.next(), d.next()];
    await new Promise((r) => setImmediate(r));
    expect(open()).toBe(4);
    bus.emit("tick", { n: 7 });
    const [ra, rb, rc, rd] = await Promise.all(next);
    expect(ra.value).toEqual({ data: { ticks: { n: 7, label: "#7" } } });
    expect(rb.value).toBe(ra.value); // the very same result object
    expect(rc.value).toEqual({ data: { ticks: { n: 7, label: "n=7" } } });
    expect(rd.value).toEqual(ra.value);
    expect(rd.value).not.toBe(ra.value); // another role: its own execution
    expect(executions()).toBe(3);

    // Unsubscribing closes each source (its event-bus subscription ends).
    await Promise.all([a, b, c, d].map((it) => it.return!()));
    await new Promise((r) => setImmediate(r));
    expect(open()).toBe(0);
  });

  it("gives each event its own execution", async () => {
    const { bus, schema, executions } = setup();
    const subscribe = createSharedSubscribe();
    const it = (await subscribe({ schema, document: parse(`subscription { ticks { label } }`), contextValue: ctx("viewer") })) as AsyncIterableIterator<ExecutionResult>;
    const first = it.next();
    await new Promise((r) => setImmediate(r));
    bus.emit("tick", { n: 1 });
    expect((await first).value).toEqual({ data: { ticks: { label: "1" } } });
    const second = it.next();
    bus.emit("tick", { n: 2 });
    expect((await second).value).toEqual({ data: { ticks: { label: "2" } } });
    expect(executions()).toBe(2);
    await it.return!();
  });
});
