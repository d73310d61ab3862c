import type { Logger } from "pino";
import type { Principal } from "./principal.js";
import type { AppServices } from "./app-services.js";
import type { Loaders } from "./loaders.js";

/**
 * What every service call receives first: who is calling, the per-request DataLoaders (never
 * shared across requests) and a logger bound to the request.
 */
export interface RequestContext {
  principal: Principal;
  services: AppServices;
  loaders: Loaders;
  log: Logger;
  /**
   * Aborted when the HTTP client went away before its answer was sent. Long polls (claimTasks)
   * stop waiting on it, so an executor that hung up is never handed a task it cannot receive.
   */
  abandoned?: AbortSignal;
}
