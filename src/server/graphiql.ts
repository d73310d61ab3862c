import zlib from "node:zlib";
import crypto from "node:crypto";
import type { Request, Response, NextFunction } from "express";
import { renderGraphiQL } from "@graphql-yoga/render-graphiql";

const DEFAULT_QUERY = `# Welcome to mlgraph. Ctrl-Enter runs the query; the Docs pane is the API reference.
query Experiments {
  viewer { name role }
  experiments(first: 10) {
    edges { node { id name createdAt } }
  }
}
`;

/**
 * GraphiQL, self-contained (about 9 MB of inlined JS/CSS, no CDN), rendered once and served
 * gzip-compressed with an ETag to browsers that GET /graphql with Accept: text/html.
 * Subscriptions go over graphql-ws on the same path.
 */
export function createGraphiqlHandler() {
  const html = renderGraphiQL({
    title: "mlgraph GraphiQL",
    endpoint: "/graphql",
    subscriptionsProtocol: "WS",
    defaultQuery: DEFAULT_QUERY,
  } as Parameters<typeof renderGraphiQL>[0]);
  const gzipped = zlib.gzipSync(html, { level: 9 });
  const etag = `"${crypto.createHash("sha256").update(html).digest("base64url").slice(0, 27)}"`;
  return (req: Request, res: Response, next: NextFunction) => {
    const wantsHtml = req.method === "GET" && (req.headers.accept ?? "").includes("text/html") && !req.query.query;
    if (!wantsHtml) return next();
    res.setHeader("Content-Type", "text/html; charset=utf-8");
    res.setHeader("Cache-Control", "public, max-age=3600");
    res.setHeader("ETag", etag);
    res.setHeader("Vary", "Accept, Accept-Encoding");
    if (req.headers["if-none-match"] === etag) return res.status(304).end();
    if ((req.headers["accept-encoding"] ?? "").includes("gzip")) {
      res.setHeader("Content-Encoding", "gzip");
      return res.end(gzipped);
    }
    return res.end(html);
  };
}
