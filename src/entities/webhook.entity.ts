import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn } from "typeorm";
import { Field, ID, Int, ObjectType, registerEnumType } from "type-graphql";

export enum WebhookEvent {
  MODEL_VERSION_CREATED = "MODEL_VERSION_CREATED",
  ALIAS_SET = "ALIAS_SET",
  ALIAS_DELETED = "ALIAS_DELETED",
  STAGE_TRANSITION_REQUESTED = "STAGE_TRANSITION_REQUESTED",
  STAGE_TRANSITION_APPROVED = "STAGE_TRANSITION_APPROVED",
  STAGE_TRANSITION_REJECTED = "STAGE_TRANSITION_REJECTED",
  RUN_FINISHED = "RUN_FINISHED",
  PIPELINE_RUN_FINISHED = "PIPELINE_RUN_FINISHED",
  /** Sent only by testWebhook. */
  PING = "PING",
}
registerEnumType(WebhookEvent, { name: "WebhookEvent", description: "What a webhook can be notified about (PING only comes from testWebhook)." });

export enum WebhookDeliveryStatus {
  PENDING = "PENDING",
  DELIVERED = "DELIVERED",
  FAILED = "FAILED",
}
registerEnumType(WebhookDeliveryStatus, { name: "WebhookDeliveryStatus", description: "PENDING while attempts remain, then DELIVERED or FAILED." });

@Entity({ name: "webhooks" })
@ObjectType({ description: "An HTTP endpoint notified of registry and run events, with HMAC-SHA256 signed deliveries." })
export class Webhook {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID, { description: "Webhook id (also in X-Mlgraph-Webhook)." })
  id: string;

  @Column({ type: "text" })
  @Field({ description: "Destination URL (http or https)." })
  url: string;

  @Column({ type: "text", array: true })
  @Field(() => [WebhookEvent], { description: "Events delivered to it." })
  events: WebhookEvent[];

  @Column({ name: "model_name", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Only registry events of this model (run and pipeline events are not filtered)." })
  modelName: string | null;

  /** Never exposed: it signs deliveries. */
  @Column({ type: "text" })
  secret: string;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Free text." })
  description: string | null;

  @Column({ type: "boolean" })
  @Field({ description: "Inactive webhooks receive no events; testWebhook still sends them its PING, so an endpoint can be checked before it is activated." })
  active: boolean;

  @Column({ name: "created_by", type: "text" })
  @Field({ description: "Who created it." })
  createdBy: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When it was created." })
  createdAt: Date;
}

@Entity({ name: "webhook_deliveries" })
@ObjectType({ description: "One event to deliver to one webhook (an outbox row), with its attempts." })
export class WebhookDelivery {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID, { description: "Delivery id, sent as X-Mlgraph-Delivery; the same on every retry." })
  id: string;

  @Column({ name: "webhook_id", type: "uuid" })
  webhookId: string;

  @Column({ type: "text" })
  @Field(() => WebhookEvent, { description: "The event." })
  event: WebhookEvent;

  @Column({ type: "jsonb" })
  payload: Record<string, unknown>;

  @Column({ type: "text" })
  @Field(() => WebhookDeliveryStatus, { description: "PENDING, DELIVERED or FAILED (attempts exhausted)." })
  status: WebhookDeliveryStatus;

  /** Exposed as attemptCount; the `attempts` field lists them. */
  @Column({ type: "int" })
  attempts: number;

  @Column({ name: "next_attempt_at", type: "timestamptz" })
  @Field({ description: "When the next attempt is due (while PENDING)." })
  nextAttemptAt: Date;

  @Column({ name: "last_error", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Why the last attempt failed." })
  lastError: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field({ description: "When the event happened." })
  createdAt: Date;

  @Column({ name: "delivered_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true, description: "When a 2xx answer arrived." })
  deliveredAt: Date | null;
}

@Entity({ name: "webhook_delivery_attempts" })
@ObjectType({ description: "One HTTP attempt of a delivery." })
export class WebhookDeliveryAttempt {
  @PrimaryGeneratedColumn("uuid")
  id: string;

  @Column({ name: "delivery_id", type: "uuid" })
  deliveryId: string;

  @Column({ type: "int" })
  @Field(() => Int, { description: "1 for the first attempt." })
  attempt: number;

  @Column({ name: "started_at", type: "timestamptz" })
  @Field({ description: "When the request was sent." })
  startedAt: Date;

  @Column({ name: "duration_ms", type: "int" })
  @Field(() => Int, { description: "Time until the answer or the error." })
  durationMs: number;

  @Column({ name: "response_status", type: "int", nullable: true })
  @Field(() => Int, { nullable: true, description: "HTTP status of the answer; null when no answer came." })
  responseStatus: number | null;

  @Column({ type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Network error, refused destination or non-2xx answer." })
  error: string | null;
}
