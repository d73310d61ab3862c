import crypto from "node:crypto";

/**
 * Webhook signatures, Stripe-style: `X-Mlgraph-Signature: t=<unix seconds>,v1=<hex>` where the
 * hex is HMAC-SHA256(secret, `${t}.${body}`). Receivers recompute it over the raw body and
 * refuse old timestamps, which defeats replays.
 */
export const SIGNATURE_HEADER = "x-mlgraph-signature";
export const DELIVERY_HEADER = "x-mlgraph-delivery";
export const EVENT_HEADER = "x-mlgraph-event";
/** Which webhook a delivery is for: a receiver serving several picks the secret to verify with by it. */
export const WEBHOOK_HEADER = "x-mlgraph-webhook";

export function signWebhookBody(secret: string, body: string, timestampSeconds: number): string {
  const mac = crypto.createHmac("sha256", secret).update(`${timestampSeconds}.${body}`).digest("hex");
  return `t=${timestampSeconds},v1=${mac}`;
}

/** Verifies a signature header (used by tests and example receivers). */
export function verifyWebhookSignature(secret: string, body: string, header: string, toleranceSeconds = 300, now = Date.now()): boolean {
  const parts = Object.fromEntries(header.split(",").map((p) => p.split("=", 2) as [string, string]));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || !parts.v1 || Math.abs(now / 1000 - t) > toleranceSeconds) return false;
  const expected = Buffer.from(signWebhookBody(secret, body, t).split("v1=")[1], "hex");
  const given = Buffer.from(parts.v1, "hex");
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}
