import { AsyncLocalStorage } from "node:async_hooks";
import type { ApolloServerPlugin } from "@apollo/server";
import type { RequestHandler } from "express";

/** Statements sent to each store while serving one HTTP request. */
export interface QueryCounts {
  clickhouse: number;
  postgres: number;
}

const current = new AsyncLocalStorage<QueryCounts>();

/**
 * Debug aid behind MLGRAPH_DEBUG_QUERY_COUNTS=1: tests (and people chasing N+1 reads) see how many
 * ClickHouse and PostgreSQL statements a GraphQL request caused, as `extensions.queryCounts`. The request's
 * async context carries the counter, so DataLoader batches and concurrent requests are attributed
 * to the request that started them. A group-committed INSERT is counted for the call that opened
 * its group.
 */
export function countClickHouseQuery(): void {
  const counts = current.getStore();
  if (counts) counts.clickhouse++;
}

/** Same for PostgreSQL statements (transaction control included). */
export function countPostgresQuery(): void {
  const counts = current.getStore();
  if (counts) counts.postgres++;
}

/** Express middleware that opens a counter for the rest of the request. */
export function queryCountsMiddleware(): RequestHandler {
  return (_req, _res, next) => current.run({ clickhouse: 0, postgres: 0 }, next);
}

/** Apollo plugin that puts the request's counts into the response's `extensions`. */
export function queryCountsPlugin(): ApolloServerPlugin {
  return {
    async requestDidStart() {
      return {
        async willSendResponse({ response }) {
          const counts = current.getStore();
          if (!counts || response.body.kind !== "single") return;
          response.body.singleResult.extensions = { ...response.body.singleResult.extensions, queryCounts: { ...counts } };
        },
      };
    },
  };
}
