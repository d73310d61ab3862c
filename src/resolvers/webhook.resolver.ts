import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from "type-graphql";
import { GraphQLJSON } from "graphql-scalars";
import { Webhook, WebhookDelivery, WebhookDeliveryAttempt, WebhookDeliveryStatus } from "../entities/webhook.entity.js";
import type { RequestContext } from "../services/context.js";
import { toConnection } from "./types/common.types.js";
import { CreateWebhookInput, WebhookDeliveryConnection } from "./types/registry.types.js";
import { argsKey } from "../services/grouped-loader.js";

@Resolver(() => Webhook)
export class WebhookResolver {
  @Authorized("admin")
  @Query(() => [Webhook], { description: "All webhooks." })
  webhooks(@Ctx() ctx: RequestContext) {
    return ctx.services.webhooks.list(ctx);
  }

  @Authorized("admin")
  @Mutation(() => Webhook, { description: "Creates a webhook; deliveries are signed with its secret (X-Mlgraph-Signature: t=<unix>,v1=<HMAC-SHA256 hex of `${t}.${body}`>)." })
  createWebhook(@Ctx() ctx: RequestContext, @Arg("input", () => CreateWebhookInput, { description: "The webhook." }) input: CreateWebhookInput) {
    return ctx.services.webhooks.create(ctx, input);
  }

  @Authorized("admin")
  @Mutation(() => Webhook, { description: "Pauses (false) or resumes (true) deliveries." })
  setWebhookActive(
    @Ctx() ctx: RequestContext,
    @Arg("id", () => ID, { description: "The webhook." }) id: string,
    @Arg("active", () => Boolean, { description: "Whether it receives events." }) active: boolean,
  ) {
    return ctx.services.webhooks.setActive(ctx, id, active);
  }

  @Authorized("admin")
  @Mutation(() => Boolean, { description: "Deletes a webhook and its delivery history." })
  deleteWebhook(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "The webhook." }) id: string) {
    return ctx.services.webhooks.delete(ctx, id);
  }

  @Authorized("admin")
  @Mutation(() => WebhookDelivery, { description: "Sends a PING delivery now (to an inactive webhook too) and returns it with its first attempt." })
  testWebhook(@Ctx() ctx: RequestContext, @Arg("id", () => ID, { description: "The webhook." }) id: string) {
    return ctx.services.webhooks.test(ctx, id);
  }

  @FieldResolver(() => WebhookDeliveryConnection, { description: "Deliveries, newest first, with their attempts." })
  async deliveries(
    @Root() hook: Webhook,
    @Ctx() ctx: RequestContext,
    @Arg("status", () => WebhookDeliveryStatus, { nullable: true, description: "Only deliveries in this status." }) status?: WebhookDeliveryStatus,
    @Arg("first", () => Int, { nullable: true, description: "Page size (default 50, at most 1000)." }) first?: number,
    @Arg("after", () => String, { nullable: true, description: "Cursor from a previous page." }) after?: string,
  ) {
    return toConnection(await ctx.loaders.webhookDeliveries.load(argsKey({ status: status ?? null, first: first ?? null, after: after ?? null }, hook.id)));
  }
}

@Resolver(() => WebhookDelivery)
export class WebhookDeliveryResolver {
  @FieldResolver(() => [WebhookDeliveryAttempt], { description: "HTTP attempts, first first." })
  attempts(@Root() delivery: WebhookDelivery, @Ctx() ctx: RequestContext) {
    return ctx.loaders.webhookDeliveryAttempts.load(delivery.id);
  }

  @FieldResolver(() => Int, { description: "Attempts made so far." })
  attemptCount(@Root() delivery: WebhookDelivery): number {
    return delivery.attempts;
  }

  @FieldResolver(() => GraphQLJSON, { description: "The event data (the `data` member of the delivered body)." })
  payload(@Root() delivery: WebhookDelivery) {
    return delivery.payload;
  }
}
