/**
 * Sends task completions as they come, grouping those that arrive while a request is in flight
 * into the next request (completeTasks): an idle executor reports at once, a busy one with many
 * slots sends one request per round trip instead of one per task.
 *
 * completeTasks is all or nothing; when the server refuses a group (one stale lease, say), each
 * completion of it is sent alone so the valid ones still land and only the refused one fails.
 */
export class CompletionBatcher<T> {
  private queue: { item: T; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private sending = false;

  constructor(
    private readonly send: {
      /** Sends several completions in one request. */
      many(items: T[]): Promise<void>;
      /** Sends one completion. */
      one(item: T): Promise<void>;
    },
    private readonly maxPerRequest = 100,
  ) {}

  /** Resolves when the server has accepted this completion; rejects with its refusal or error. */
  submit(item: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.sending) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.sending = true;
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.maxPerRequest);
        if (group.length === 1) {
          await this.send.one(group[0]!.item).then(group[0]!.resolve, group[0]!.reject);
          continue;
        }
        try {
          await this.send.many(group.map((g) => g.item));
          group.forEach((g) => g.resolve());
        } catch {
          await Promise.all(group.map((g) => this.send.one(g.item).then(g.resolve, g.reject)));
        }
      }
    } finally {
      this.sending = false;
    }
  }
}
