import type { DataSource } from "typeorm";
import type { Logger } from "pino";
import type { Config } from "../config.js";
import type { Principal } from "./principal.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import { ExperimentsService } from "./experiments.service.js";
import { RunsService } from "./runs.service.js";
import { RunSearch } from "./run-search.js";
import { TokensService } from "./tokens.service.js";
import { RunUpdatesService } from "./run-updates.service.js";

/** The service container, built once per process from the opened stores. */
export interface AppServices {
  config: Config;
  log: Logger;
  db: DataSource;
  bus: EventBus;
  experiments: ExperimentsService;
  runs: RunsService;
  tokens: TokensService;
  runUpdates: RunUpdatesService;
  /**
   * Loops that run beside the API (scheduler, webhook dispatcher, ...): started after the server
   * listens, stopped first on shutdown. Features push theirs in createServices.
   */
  workers: BackgroundWorker[];
  /** Set when OIDC is configured: verifies Bearer JWTs. */
  oidc?: { verify(jwt: string): Promise<Principal> };
}

export interface BackgroundWorker {
  name: string;
  start(): Promise<void> | void;
  stop(): Promise<void>;
}

export interface Stores {
  db: DataSource;
  bus: EventBus;
}

export function createServices(config: Config, log: Logger, stores: Stores): AppServices {
  const experiments = new ExperimentsService(stores.db);
  const runSearch = new RunSearch(stores.db);
  const runs = new RunsService(stores.db, stores.bus, runSearch);
  const tokens = new TokensService(stores.db);
  const workers: BackgroundWorker[] = [];
  return { config, log, db: stores.db, bus: stores.bus, experiments, runs, tokens, runUpdates: new RunUpdatesService(), workers };
}
