import type { DataSource, EntityManager } from "typeorm";
import type { PipelineSpec, TaskSpec } from "./spec/index.js";

interface CachedSpec {
  spec: PipelineSpec;
  tasks: Map<string, TaskSpec>;
}

/**
 * Pipeline versions are immutable, so their specs can be cached forever per process (bounded).
 * A claim needs its task's command; re-reading a 10,000-task spec per claim would dominate.
 */
export class SpecCache {
  private readonly entries = new Map<string, Promise<CachedSpec>>();

  constructor(
    private readonly db: DataSource,
    private readonly maxEntries = 200,
  ) {}

  /**
   * The normalized spec of a pipeline version and its tasks by id. Inside a transaction pass its
   * EntityManager: taking a second pooled connection while holding one can starve the pool.
   */
  get(pipelineVersionId: string, em?: EntityManager): Promise<CachedSpec> {
    let entry = this.entries.get(pipelineVersionId);
    if (entry) {
      // Map order is insertion order: re-insert to mark as recently used.
      this.entries.delete(pipelineVersionId);
      this.entries.set(pipelineVersionId, entry);
      return entry;
    }
    entry = this.load(pipelineVersionId, em ?? this.db.manager);
    entry.catch(() => this.entries.delete(pipelineVersionId));
    this.entries.set(pipelineVersionId, entry);
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
    return entry;
  }

  private async load(pipelineVersionId: string, em: EntityManager): Promise<CachedSpec> {
    const rows: { spec: PipelineSpec }[] = await em.query("SELECT spec FROM pipeline_versions WHERE id = $1", [pipelineVersionId]);
    if (!rows[0]) throw new Error(`pipeline version ${pipelineVersionId} not found`);
    const spec = rows[0].spec;
    return { spec, tasks: new Map(spec.pipeline.tasks.map((t) => [t.id, t])) };
  }
}
