import http from "node:http";

/**
 * An HTTP proxy in front of a test server that fails chosen requests, to see how a client copes:
 * `fail` sees each request body and answers false (forward it), true (a 503 page, what a load
 * balancer answers while the server restarts), "hang" (never answer: a silently dropped
 * connection), "lose-answer" (forward it, then cut the connection instead of answering: the
 * server applied the request but the client never hears so) or `{ status, body }` (answer that
 * instead: what another server would have said). `failures` counts the requests it did not
 * simply forward. `lostAnswers` holds the bodies of the answers it cut off, as the server sent them.
 */
export async function startFlakyProxy(
  target: string,
  fail: (body: string) => boolean | "hang" | "lose-answer" | { status: number; body: unknown },
): Promise<{ url: string; failures: () => number; lostAnswers: string[]; close: () => Promise<void> }> {
  const origin = new URL(target).origin;
  let failures = 0;
  const lostAnswers: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks);
      const verdict = fail(body.toString("utf8"));
      if (verdict === "hang") {
        failures++;
        return;
      }
      if (typeof verdict === "object") {
        failures++;
        res.writeHead(verdict.status, { "content-type": "application/json" }).end(JSON.stringify(verdict.body));
        return;
      }
      if (verdict === true) {
        failures++;
        res.writeHead(503, { "content-type": "text/html" }).end("<html><body>503 Service Unavailable</body></html>");
        return;
      }
      try {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && k !== "host" && k !== "content-length" && k !== "connection") headers[k] = v;
        const answer = await fetch(new URL(req.url ?? "/", origin), { method: req.method, headers, body: req.method === "GET" || req.method === "HEAD" ? undefined : body });
        if (verdict === "lose-answer") {
          lostAnswers.push(await answer.text());
          failures++;
          req.socket.destroy();
          return;
        }
        res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/octet-stream" });
        res.end(Buffer.from(await answer.arrayBuffer()));
      } catch {
        res.writeHead(502).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as import("node:net").AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${new URL(target).pathname}`,
    failures: () => failures,
    lostAnswers,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
