import { CompletionBatcher } from "../../../src/executors/completion-batcher";

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe("CompletionBatcher", () => {
  it("sends the first completion at once and groups those that arrive while it is in flight", async () => {
    const requests: string[][] = [];
    const gate = deferred();
    const batcher = new CompletionBatcher<string>({
      many: async (items) => {
        requests.push(items);
      },
      one: async (item) => {
        requests.push([item]);
        if (item === "a") await gate.promise;
      },
    });
    const a = batcher.submit("a");
    const rest = ["b", "c", "d"].map((x) => batcher.submit(x));
    expect(requests).toEqual([["a"]]);
    gate.resolve();
    await Promise.all([a, ...rest]);
    expect(requests).toEqual([["a"], ["b", "c", "d"]]);
  });

  it("splits groups at the per-request maximum", async () => {
    const requests: number[][] = [];
    const batcher = new CompletionBatcher<number>({ many: async (items) => void requests.push(items), one: async (item) => void requests.push([item]) }, 2);
    await Promise.all([1, 2, 3, 4, 5].map((n) => batcher.submit(n)));
    expect(requests).toEqual([[1], [2, 3], [4, 5]]);
  });

  it("when a group is refused, sends each completion alone so only the refused one fails", async () => {
    const sentAlone: string[] = [];
    const groups: string[][] = [];
    const gate = deferred();
    const batcher = new CompletionBatcher<string>({
      many: async (items) => {
        groups.push(items);
        throw new Error("CONFLICT: inputs[1].leaseToken");
      },
      one: async (item) => {
        if (item === "first") return gate.promise;
        sentAlone.push(item);
        if (item === "stale") throw new Error("CONFLICT");
      },
    });
    const first = batcher.submit("first");
    const results = Promise.allSettled(["x", "stale", "y"].map((i) => batcher.submit(i)));
    gate.resolve();
    await first;
    expect((await results).map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(groups).toEqual([["x", "stale", "y"]]);
    expect(sentAlone.sort()).toEqual(["stale", "x", "y"]);
  });
});
