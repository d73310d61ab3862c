import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { BackgroundWorker } from "./app-services.js";
import type { ArtifactsService } from "./artifacts.service.js";

/**
 * Every `sweepIntervalMs`, discards artifact uploads that were never completed, once their URLs
 * have been expired for `abandonAfterSeconds` (records, parts, bytes; see
 * ArtifactsService.discardAbandonedUploads), then the store's own leftovers of that age (the local
 * store's temporary files and part folders). Safe on every replica at once: each upload record is
 * deleted by one DELETE, which alone goes on to discard its bytes.
 */
export class AbandonedUploadsSweeper implements BackgroundWorker {
  readonly name = "abandoned-uploads-sweeper";
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly artifacts: ArtifactsService,
    private readonly settings: Config["artifactUploads"],
    private readonly log: Logger,
  ) {}

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One sweep; resolves with the number of uploads discarded. */
  async sweep(): Promise<number> {
    const discarded = await this.artifacts.discardAbandonedUploads(this.log, this.settings.abandonAfterSeconds);
    const maxAgeMs = (this.settings.expiresInSeconds + this.settings.abandonAfterSeconds) * 1000;
    const leftovers = (await this.artifacts.storeIfConfigured?.removeStaleUploads?.(maxAgeMs)) ?? 0;
    if (discarded > 0 || leftovers > 0) this.log.info({ discarded, leftovers }, "artifacts: abandoned uploads discarded");
    return discarded;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.sweep()
        .then(() => undefined)
        .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, "artifacts: sweeping abandoned uploads failed; retrying next interval"))
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, this.settings.sweepIntervalMs);
    this.timer.unref();
  }
}
