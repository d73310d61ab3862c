/**
 * How many points each (run, metric key) series is known to hold, at least. Points are never
 * deleted one by one, so a count read once stays a true lower bound for as long as the process
 * lives, in every process: `Run.metric` uses it to know a series exists without asking ClickHouse,
 * and history uses it to see that a whole series is long without counting it again.
 * Bounded: when full it starts over (a miss only costs the query it would have saved).
 */
export class SeriesCountFloors {
  private readonly floors = new Map<string, number>();

  constructor(private readonly capacity = 100_000) {}

  get(runId: string, key: string): number | undefined {
    return this.floors.get(seriesId(runId, key));
  }

  /** Records a count read from the store (a floor never goes down). */
  record(runId: string, key: string, count: number): void {
    const id = seriesId(runId, key);
    const known = this.floors.get(id);
    if (known !== undefined && known >= count) return;
    if (known === undefined && this.floors.size >= this.capacity) this.floors.clear();
    this.floors.set(id, count);
  }
}

function seriesId(runId: string, key: string): string {
  return `${runId}\u0000${key}`;
}
