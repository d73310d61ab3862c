import DataLoader from "dataloader";

/** The key of one parent's request to a {@link loaderByArgs} loader. */
export function argsKey(args: object, parentId: string): string {
  return `${JSON.stringify(args)}\u0000${parentId}`;
}

/**
 * A per-request loader of one result per parent (a page of its runs, its log lines) for field
 * arguments that vary: keys are {@link argsKey}, and the parents that asked with the same
 * arguments are read together, one `load(parentIds, args)` per distinct set of arguments.
 */
export function loaderByArgs<A, R>(load: (parentIds: string[], args: A) => Promise<Map<string, R | Error>>, missing: R) {
  return new DataLoader<string, R>(async (keys) => {
    const byArgs = new Map<string, string[]>();
    for (const key of keys) {
      const at = key.lastIndexOf("\u0000");
      const args = key.slice(0, at);
      const parents = byArgs.get(args);
      if (parents) parents.push(key.slice(at + 1));
      else byArgs.set(args, [key.slice(at + 1)]);
    }
    // An Error for a parent fails that parent's field alone.
    const results = new Map<string, R | Error>();
    for (const [args, parentIds] of byArgs) {
      for (const [id, result] of await load(parentIds, JSON.parse(args) as A)) results.set(`${args}\u0000${id}`, result);
    }
    return keys.map((k) => results.get(k) ?? missing);
  });
}
