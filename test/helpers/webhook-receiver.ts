import crypto from "node:crypto";
import http from "node:http";

export interface ReceivedWebhook {
  deliveryId: string;
  event: string;
  signature: string;
  /** Whether the signature verified with the receiver's secret. */
  verified: boolean;
  body: { id: string; event: string; createdAt: string; data: Record<string, any> };
  status: number;
}

/**
 * A real HTTP webhook receiver on 127.0.0.1 that verifies `X-Mlgraph-Signature` itself (written
 * from the documented scheme, not with the server's code). `answer` picks the status per request.
 */
export async function startWebhookReceiver(secret: string, answer: (n: number, hook: Omit<ReceivedWebhook, "status">) => number = () => 200) {
  const received: ReceivedWebhook[] = [];
  const waiters: { test: () => boolean; resolve: () => void }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const signature = String(req.headers["x-mlgraph-signature"] ?? "");
      const fields = Object.fromEntries(signature.split(",").map((p) => p.split("=", 2)));
      const expected = crypto.createHmac("sha256", secret).update(`${fields.t}.${raw}`).digest("hex");
      const fresh = Math.abs(Date.now() / 1000 - Number(fields.t)) < 300;
      const verified = fresh && typeof fields.v1 === "string" && fields.v1.length === expected.length && crypto.timingSafeEqual(Buffer.from(fields.v1), Buffer.from(expected));
      const hook = { deliveryId: String(req.headers["x-mlgraph-delivery"]), event: String(req.headers["x-mlgraph-event"]), signature, verified, body: JSON.parse(raw) };
      const status = answer(received.length + 1, hook);
      received.push({ ...hook, status });
      res.writeHead(status, { "content-type": "text/plain" }).end("ok");
      for (const w of [...waiters]) if (w.test()) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as import("node:net").AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    /** Resolves when `test` holds on what arrived, or rejects after `timeoutMs`. */
    waitFor(test: (received: ReceivedWebhook[]) => boolean, timeoutMs = 15_000): Promise<void> {
      if (test(received)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`webhook receiver: condition not met in ${timeoutMs} ms; got ${JSON.stringify(received.map((r) => [r.event, r.status]))}`)), timeoutMs);
        waiters.push({ test: () => test(received), resolve: () => (clearTimeout(timer), resolve()) });
      });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
