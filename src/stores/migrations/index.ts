import { Tracking1764150000001 } from "./0001-tracking.migration.js";
import { Registry1764150000200 } from "./0200-registry.migration.js";
import { Pipelines1764150000300 } from "./0300-pipelines.migration.js";
import { PipelineOnSuccess1764150000400 } from "./0400-pipeline-on-success.migration.js";
import { PipelineRunSubmitter1764150000500 } from "./0500-pipeline-run-submitter.migration.js";
import { ExecutorRetention1764150000600 } from "./0600-executor-retention.migration.js";
import { WebhookDeliveryOrder1764150000700 } from "./0700-webhook-delivery-order.migration.js";
import { ExecutorClaims1764150000800 } from "./0800-executor-claims.migration.js";
import { IdempotencyKeys1764150000900 } from "./0900-idempotency-keys.migration.js";

/** Ordered PostgreSQL migrations; features append theirs (timestamps keep the order). */
export const migrations = [Tracking1764150000001, Registry1764150000200, Pipelines1764150000300, PipelineOnSuccess1764150000400, PipelineRunSubmitter1764150000500, ExecutorRetention1764150000600, WebhookDeliveryOrder1764150000700, ExecutorClaims1764150000800, IdempotencyKeys1764150000900];
