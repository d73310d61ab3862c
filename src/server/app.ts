import http from "node:http";
import express from "express";
import { ApolloServer, HeaderMap } from "@apollo/server";
import { expressMiddleware } from "@as-integrations/express5";
import { ApolloServerPluginDrainHttpServer } from "@apollo/server/plugin/drainHttpServer";
import { ApolloServerPluginCacheControlDisabled, ApolloServerPluginLandingPageDisabled } from "@apollo/server/plugin/disabled";
import { WebSocketServer } from "ws";
import { useServer } from "graphql-ws/use/ws";
import { GraphQLError, type GraphQLSchema } from "graphql";
import type { Logger } from "pino";
import type { DataSource } from "typeorm";
import { authRequired, type Config } from "../config.js";
import { openDatabase } from "../stores/database.js";
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from "../stores/embedded-postgres.js";
import type { EventBus } from "../stores/event-bus/event-bus.js";
import { InProcessEventBus } from "../stores/event-bus/in-process-event-bus.js";
import type * as RedisEventBusModule from "../stores/event-bus/redis-event-bus.js";
import { createServices, type AppServices } from "../services/app-services.js";
import { createLoaders } from "../services/loaders.js";
import type { RequestContext } from "../services/context.js";
import { DomainError, isUnavailable } from "../services/errors.js";
import type { Principal } from "../services/principal.js";
import { authenticate } from "./auth.js";
import { buildAppSchema } from "./schema.js";
import { formatError } from "./error-mapping.js";
import { createGraphiqlHandler } from "./graphiql.js";
import { openConfiguredMetricStore } from "./metric-store-setup.js";
import { openArtifactStorage } from "../services/artifact-storage.js";
import { countPostgresQuery, queryCountsMiddleware, queryCountsPlugin } from "./query-counts.js";
import { createSharedSubscribe } from "./shared-subscription-results.js";
import type * as OidcModule from "./oidc.js";
import { checkOperationLimits } from "./operation-limits.js";
import { InProcessRateLimiter, RedisRateLimiter, type RateLimiter } from "./rate-limiter.js";
import { instrumentRootResolvers, rateLimitRefusals, renderMetrics, requestDuration } from "./observability.js";
import { registerScrapeCollectors } from "./observability-collectors.js";
import { parse, type DocumentNode } from "graphql";
import { OpenServerGuard } from "./open-server-guard.js";
import { principalStillValid } from "../services/credential-check.js";

export interface RunningServer {
  url: string;
  services: AppServices;
  stop(): Promise<void>;
}

/** Cleanup steps run in reverse order of acquisition, each at most once, errors logged. */
class Shutdown {
  private readonly steps: { name: string; fn: () => Promise<void> }[] = [];
  add(name: string, fn: () => Promise<void>) {
    this.steps.push({ name, fn });
  }
  async run(log: Logger) {
    while (this.steps.length) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        log.error({ err: (err as Error).message, step: step.name }, "shutdown step failed");
      }
    }
  }
}

function makeContext(services: AppServices, principal: Principal, log: Logger, abandoned?: AbortSignal): RequestContext {
  return { principal, services, loaders: createLoaders(services), log, abandoned };
}

/** A signal aborted when the response's connection closes before the response was finished. */
function abandonedSignal(res: import("express").Response): AbortSignal {
  const controller = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}

/** Aborted when the websocket closes; one signal per socket, shared by its operations. */
function socketClosed(extra: { socket: import("ws").WebSocket; closed?: AbortSignal }): AbortSignal {
  if (!extra.closed) {
    const controller = new AbortController();
    if (extra.socket.readyState >= extra.socket.CLOSING) controller.abort();
    else extra.socket.once("close", () => controller.abort());
    extra.closed = controller.signal;
  }
  return extra.closed;
}

/**
 * What a failed `authenticate()` answers. Only a refused credential is 401 UNAUTHENTICATED: a
 * store or OIDC issuer that is away says nothing about the credential, and clients (executors
 * reporting a finished task) give up on 401 but retry 503 UNAVAILABLE.
 */
function authFailure(err: unknown, log: Logger): { status: number; code: string; message: string } {
  if (err instanceof DomainError && err.code === "UNAUTHENTICATED") return { status: 401, code: "UNAUTHENTICATED", message: err.message };
  if (err instanceof DomainError && err.code === "UNAVAILABLE") return { status: 503, code: "UNAVAILABLE", message: err.message };
  log.warn({ err: err instanceof Error ? err.message : err }, "could not check a credential");
  if (isUnavailable(err)) return { status: 503, code: "UNAVAILABLE", message: "a backing store is unavailable; try again shortly" };
  return { status: 500, code: "INTERNAL_SERVER_ERROR", message: "Internal server error" };
}

function authError(err: unknown, log: Logger): GraphQLError {
  const { status, code, message } = authFailure(err, log);
  return new GraphQLError(message, { extensions: { code, http: { status } } });
}

/**
 * Starts the whole API on one port: stores, services, GraphQL over HTTP (Apollo) and WebSocket
 * (graphql-ws), GraphiQL, health endpoints. `stop()` drains and closes everything it opened.
 */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const shutdown = new Shutdown();
  try {
    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      const pg: EmbeddedPostgresHandle = await startEmbeddedPostgres(config.dataDir, log);
      shutdown.add("embedded postgres", () => pg.stop());
      databaseUrl = pg.url;
      log.info({ dataDir: config.dataDir }, "embedded PostgreSQL started");
    }
    const db: DataSource = await openDatabase(databaseUrl, log, config.debugQueryCounts ? { onQuery: countPostgresQuery } : {});
    shutdown.add("database", () => db.destroy());

    let bus: EventBus;
    if (config.redisUrl) {
      // ioredis, like jose below, is loaded only when configured: each is about 0.05-0.1 s of a start.
      const { RedisEventBus } = require("../stores/event-bus/redis-event-bus.js") as typeof RedisEventBusModule;
      const redisBus = new RedisEventBus(config.redisUrl, config.redisPrefix, log);
      await redisBus.ready();
      bus = redisBus;
    } else {
      bus = new InProcessEventBus();
    }
    shutdown.add("event bus", () => bus.close());

    const metrics = await openConfiguredMetricStore(config, log);
    shutdown.add("metric store", () => metrics.close());

    const artifactStorage = await openArtifactStorage(config, log);
    shutdown.add("artifact store", () => artifactStorage.close());

    const services = createServices(config, log, { db, bus, metrics, artifacts: artifactStorage.store });
    registerScrapeCollectors(services);
    if (config.auth.oidc) {
      const { OidcVerifier } = require("./oidc.js") as typeof OidcModule;
      services.oidc = new OidcVerifier(config.auth.oidc);
    }
    await bootstrapAdminToken(services, config, log);

    const schema = instrumentRootResolvers(await buildAppSchema());
    const app = express();
    app.disable("x-powered-by");
    const guard = new OpenServerGuard(config);
    if (guard.enabled) app.use(guard.middleware());
    // Signed artifact URLs of the local store; PUT bodies stream to disk, so before any body parser.
    artifactStorage.mount(app);
    const httpServer = http.createServer(app);
    const rateLimiter: RateLimiter = config.redisUrl
      ? new RedisRateLimiter(config.redisUrl, config.redisPrefix, config.limits.ratePerSecond, config.limits.rateBurst, log)
      : new InProcessRateLimiter(config.limits.ratePerSecond, config.limits.rateBurst);
    shutdown.add("rate limiter", () => rateLimiter.close());
    const { url, wsCleanup } = await mountGraphql(app, httpServer, schema, services, log, shutdown, rateLimiter, guard);
    await new Promise<void>((resolve, reject) => {
      httpServer.once("error", reject);
      httpServer.listen(config.port, config.host, () => resolve());
    });
    artifactStorage.setListeningPort((httpServer.address() as import("node:net").AddressInfo).port);
    shutdown.add("http server", async () => {
      await wsCleanup();
      httpServer.closeIdleConnections();
    });
    for (const worker of services.workers) {
      await worker.start();
      shutdown.add(`worker ${worker.name}`, () => worker.stop());
    }
    const address = httpServer.address() as import("node:net").AddressInfo;
    const listenUrl = url.replace("PORT", String(address.port));
    log.info({ url: listenUrl, auth: authRequired(config) ? "required" : "open" }, "mlgraph is serving GraphQL");
    return { url: listenUrl, services, stop: () => shutdown.run(log) };
  } catch (err) {
    await shutdown.run(log);
    throw err;
  }
}

async function mountGraphql(
  app: express.Express,
  httpServer: http.Server,
  schema: GraphQLSchema,
  services: AppServices,
  log: Logger,
  shutdown: Shutdown,
  rateLimiter: RateLimiter,
  guard: OpenServerGuard,
) {
  const config = services.config;
  /** Per-principal token bucket; the open loopback server (anonymous admin) is not limited. */
  const enforceRateLimit = async (principal: Principal) => {
    if (principal.kind === "anonymous" || config.limits.ratePerSecond === 0) return;
    const decision = await rateLimiter.take(`${principal.kind}:${principal.id}`);
    if (decision.allowed) return;
    rateLimitRefusals.inc();
    throw new GraphQLError(`rate limit exceeded: retry after ${decision.retryAfterSeconds} s`, {
      extensions: {
        code: "RATE_LIMITED",
        retryAfterSeconds: decision.retryAfterSeconds,
        // Apollo merges `http` into the response head; it expects a HeaderMap there.
        http: { status: 429, headers: new HeaderMap([["retry-after", String(decision.retryAfterSeconds)]]) as unknown as Record<string, string> },
      },
    });
  };
  app.get("/metrics", async (req, res) => {
    if (authRequired(config)) {
      try {
        await authenticate(services, req.headers.authorization);
      } catch (err) {
        const { status } = authFailure(err, log);
        const text = status === 401 ? "authentication required" : status === 503 ? "a backing store is unavailable; try again shortly" : "internal server error";
        res.status(status).type("text/plain").send(`${text}\n`);
        return;
      }
    }
    res.type("text/plain; version=0.0.4").send(await renderMetrics());
  });
  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  // Public (probes carry no token): each store is only "ok" or "unavailable" here; the reason
  // (hosts, ports, a ClickHouse auth message) goes to the log, not to whoever asks.
  app.get("/readyz", async (_req, res) => {
    const checks: Record<string, string> = {};
    const check = async (name: string, probe: () => Promise<unknown>) => {
      try {
        await probe();
        checks[name] = "ok";
      } catch (err) {
        checks[name] = "unavailable";
        log.warn({ check: name, err: (err as Error).message }, "readiness check failed");
      }
    };
    await check("database", () => services.db.query("SELECT 1"));
    await check("clickhouse", () => services.metrics.ping());
    const ready = Object.values(checks).every((v) => v === "ok");
    res.status(ready ? 200 : 503).json({ status: ready ? "ready" : "unavailable", checks });
  });

  const wsServer = new WebSocketServer({
    server: httpServer,
    path: "/graphql",
    maxPayload: config.limits.maxBodyBytes,
    // Websockets are not subject to CORS: on an open server only local pages may connect.
    verifyClient: ({ origin, req }: { origin?: string; req: http.IncomingMessage }, done: (ok: boolean, status?: number, message?: string) => void) =>
      guard.hostAllowed(req.headers.host) && guard.originAllowed(origin || undefined) ? done(true) : done(false, 403, "Forbidden: not a local page"),
  });
  const wsLog = log.child({ transport: "ws" });
  const serverCleanup = useServer<Record<string, unknown>, { principal?: Principal; closed?: AbortSignal }>(
    {
      schema,
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const header = (params.Authorization ?? params.authorization ?? (params.token ? `Bearer ${String(params.token)}` : undefined)) as string | undefined;
        try {
          ctx.extra.principal = await authenticate(services, header);
          return true;
        } catch (err) {
          // A store that is away is no verdict on the credential: the socket is closed with 1013
          // "try again later", which graphql-ws clients retry (its 4500 they give up on); a
          // refused credential closes it with 4403, which they do not retry.
          if ((err instanceof DomainError && err.code === "UNAVAILABLE") || isUnavailable(err)) {
            ctx.extra.socket.close(1013, "a backing store is unavailable; try again shortly");
          }
          return false;
        }
      },
      onSubscribe: async (ctx, _id, payload) => {
        let document: DocumentNode;
        try {
          document = parse(payload.query);
        } catch {
          return; // graphql-ws reports the syntax error itself
        }
        const errors = checkOperationLimits(schema, document, payload.operationName, payload.variables ?? undefined, config.limits);
        if (errors.length) return errors;
        // The socket authenticated once, when it opened; every operation on it (queries and
        // mutations too, not only subscriptions) must stop working once that token is revoked
        // or the JWT has expired, as it would over HTTP.
        if (!(await principalStillValid(services, ctx.extra.principal as Principal))) {
          return [new GraphQLError("credentials have been revoked or have expired; reconnect with valid ones", { extensions: { code: "UNAUTHENTICATED" } })];
        }
        try {
          await enforceRateLimit(ctx.extra.principal as Principal);
        } catch (err) {
          return [err as GraphQLError];
        }
        return;
      },
      // Each event is executed once per distinct operation, not once per subscriber.
      subscribe: createSharedSubscribe((ctx) => ({ ...(ctx as RequestContext), loaders: createLoaders((ctx as RequestContext).services) })),
      // A fresh context (and fresh DataLoaders) per operation, never shared across operations.
      // The socket's closing is the operations' hang-up: a claimTasks long poll sent over it
      // stops waiting (and claims nothing more) when the executor is gone, as over HTTP.
      context: (ctx) => makeContext(services, ctx.extra.principal as Principal, wsLog, socketClosed(ctx.extra)),
      onNext: (_ctx, _id, _payload, _args, result) => {
        if (!result.errors?.length) return;
        return { ...result, errors: result.errors.map((e) => formatError(e.toJSON(), e, wsLog)) };
      },
      onError: (_ctx, _id, _payload, errors) => errors.map((e) => formatError(e.toJSON(), e, wsLog)),
    },
    wsServer,
  );

  const apollo = new ApolloServer<RequestContext>({
    schema,
    introspection: true,
    includeStacktraceInErrorResponses: false,
    stopOnTerminationSignals: false,
    formatError: (formatted, error) => formatError(formatted, error, log),
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer }),
      ApolloServerPluginLandingPageDisabled(),
      // No HTTP caching of GraphQL answers here; without this plugin (and with no willResolveField
      // hook anywhere) Apollo does not wrap every field resolver, which costs ~2x on wide answers.
      ApolloServerPluginCacheControlDisabled(),
      ...(config.debugQueryCounts ? [queryCountsPlugin()] : []),
      {
        // Limits and timing for every HTTP operation.
        async requestDidStart() {
          const started = process.hrtime.bigint();
          return {
            async didResolveOperation({ request, document, operationName }) {
              const errors = checkOperationLimits(schema, document, operationName ?? request.operationName, request.variables, config.limits);
              // Thrown here, Apollo would answer 500; a refused operation is the client's error.
              if (errors.length) throw new GraphQLError(errors[0].message, { extensions: { ...errors[0].extensions, http: { status: 400 } } });
            },
            async willSendResponse({ operationName, operation, errors }) {
              const seconds = Number(process.hrtime.bigint() - started) / 1e9;
              requestDuration.observe({ operation: operationName ?? "anonymous", type: operation?.operation ?? "unknown", outcome: errors?.length ? "error" : "ok" }, seconds);
            },
          };
        },
      },
    ],
  });
  await apollo.start();
  shutdown.add("apollo", () => apollo.stop());

  app.use("/graphql", createGraphiqlHandler());
  if (config.debugQueryCounts) app.use("/graphql", queryCountsMiddleware());
  app.use(
    "/graphql",
    express.json({ limit: config.limits.maxBodyBytes }),
    expressMiddleware(apollo, {
      context: async ({ req, res }) => {
        let principal: Principal;
        try {
          principal = await authenticate(services, req.headers.authorization);
        } catch (err) {
          throw authError(err, log);
        }
        await enforceRateLimit(principal);
        return makeContext(services, principal, log, abandonedSignal(res));
      },
    }),
  );
  // A body express.json() refused (not JSON — e.g. a NaN written by a client — or over the size
  // limit) is answered as a GraphQL error, not express's HTML page: clients then see a clear,
  // non-retryable BAD_REQUEST naming the cause instead of an unexplained HTTP 400.
  app.use("/graphql", (err: { type?: string; status?: number; message?: string }, _req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (!err || typeof err.status !== "number" || err.status < 400 || err.status >= 500) return next(err);
    const message =
      err.type === "entity.too.large"
        ? `request body: larger than the server's limit of ${config.limits.maxBodyBytes} bytes`
        : `request body: ${err.type === "entity.parse.failed" ? "not valid JSON" : err.message ?? "refused"}`;
    res.status(err.status).json({ errors: [{ message, extensions: { code: "BAD_REQUEST", field: "body" } }] });
  });
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:PORT/graphql`,
    wsCleanup: async () => {
      await serverCleanup.dispose();
      await new Promise<void>((resolve) => wsServer.close(() => resolve()));
    },
  };
}

/**
 * On a server that requires auth and has no admin yet, mint one admin token and print it once:
 * the operator's way in. Later starts find the admin and print nothing.
 */
async function bootstrapAdminToken(services: AppServices, config: Config, log: Logger): Promise<void> {
  if (!authRequired(config)) {
    log.warn({ host: config.host }, "auth is OFF: the server listens on loopback only and every caller acts as admin; set MLGRAPH_AUTH=required to require tokens");
    return;
  }
  if ((await services.tokens.countAdmins()) > 0) return;
  const { secret } = await services.tokens.create(null, { name: "bootstrap-admin", role: "admin" });
  // Printed once, on its own line, for the operator; it is stored only as a hash.
  process.stdout.write(`\nmlgraph: created the first admin token (shown only once):\n  MLGRAPH_TOKEN=${secret}\n\n`);
}
