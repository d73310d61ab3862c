import type { EventBus } from "../stores/event-bus/event-bus.js";
import { pipelineTopics } from "./pipeline-events.js";

/**
 * Wakes long-polling claimers when their pool gets work. One event-bus subscription per pool and
 * process (not one per waiting request), fanned out to the local waiters; with Redis, a task
 * queued through replica A wakes claimers waiting on replica B.
 */
export class QueueNotifier {
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly subscriptions = new Map<string, Promise<() => Promise<void>>>();
  private closed = false;

  constructor(private readonly bus: EventBus) {}

  /**
   * Registers a waiter for `pool` *before* the caller looks at the queue, so a notification that
   * arrives between the look and the wait is not lost. Call `wait` at most once, then `dispose`.
   */
  async register(pool: string): Promise<{ wait(ms: number): Promise<boolean>; dispose(): void }> {
    await this.subscribe(pool);
    let woken = false;
    let resolveWait: ((woke: boolean) => void) | null = null;
    const wake = () => {
      woken = true;
      resolveWait?.(true);
    };
    let set = this.waiters.get(pool);
    if (!set) this.waiters.set(pool, (set = new Set()));
    set.add(wake);
    const dispose = () => {
      set!.delete(wake);
      resolveWait?.(false);
    };
    return {
      wait: (ms) => {
        if (woken || this.closed) return Promise.resolve(woken);
        return new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), ms);
          resolveWait = (woke) => {
            clearTimeout(timer);
            resolveWait = null;
            resolve(woke);
          };
        });
      },
      dispose,
    };
  }

  private subscribe(pool: string): Promise<unknown> {
    let sub = this.subscriptions.get(pool);
    if (!sub) {
      sub = this.bus.subscribe(pipelineTopics.queue(pool), () => this.wakeAll(pool));
      this.subscriptions.set(pool, sub);
      sub.catch(() => this.subscriptions.delete(pool));
    }
    return sub;
  }

  private wakeAll(pool: string): void {
    for (const wake of [...(this.waiters.get(pool) ?? [])]) wake();
  }

  /** Ends every wait (they answer "nothing to claim") and drops the subscriptions. */
  async close(): Promise<void> {
    this.closed = true;
    for (const pool of this.waiters.keys()) this.wakeAll(pool);
    const subs = [...this.subscriptions.values()];
    this.subscriptions.clear();
    await Promise.all(subs.map(async (s) => (await s)().catch(() => undefined)));
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
