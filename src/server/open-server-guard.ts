import os from "node:os";
import type express from "express";
import { authRequired, isLoopback, type Config } from "../config.js";

/** Other names that reach only this machine: Linux routes 0.0.0.0 to loopback. */
const LOCAL_NAMES = new Set(["0.0.0.0", "localhost.localdomain", "ip6-localhost", "ip6-loopback"]);

/**
 * On an open server (no credentials needed, every caller is an admin: loopback only) the API must
 * answer only what runs on this machine. Any web page the user visits can make the browser send
 * requests to 127.0.0.1. Plain HTTP calls are stopped by the browser (no CORS headers) and by
 * Apollo's CSRF prevention, but two ways remain, closed here:
 * - DNS rebinding: a page on evil.example whose name then resolves to 127.0.0.1 is same-origin
 *   with the server for the browser; its requests say `Host: evil.example`, refused here;
 * - websockets are not subject to CORS: any page may open ws://127.0.0.1:4000/graphql; the
 *   browser says where the page came from in `Origin`, which must be a local page.
 * With auth required none of this applies: a page cannot present a token it does not have.
 */
export class OpenServerGuard {
  readonly enabled: boolean;
  private readonly publicHost: string | undefined;

  constructor(config: Config) {
    this.enabled = !authRequired(config);
    this.publicHost = hostnameOf(config.publicUrl);
  }

  /** A `Host` header naming this machine (or the configured public URL's host). */
  hostAllowed(host: string | undefined): boolean {
    if (!this.enabled) return true;
    if (!host) return false;
    return this.localName(hostnameOf(`http://${host}`));
  }

  /** No `Origin` (not a browser), or a page served from this machine. */
  originAllowed(origin: string | undefined): boolean {
    if (!this.enabled || origin === undefined) return true;
    return this.localName(hostnameOf(origin));
  }

  /** Express middleware refusing requests whose `Host` is not this machine's. */
  middleware(): express.RequestHandler {
    return (req, res, next) => {
      if (this.hostAllowed(req.headers.host)) return next();
      res.status(403).type("text/plain").send("this open (no-auth) mlgraph server answers only requests addressed to localhost; set MLGRAPH_PUBLIC_URL to add a name\n");
    };
  }

  private localName(hostname: string | undefined): boolean {
    if (!hostname) return false;
    return (
      isLoopback(hostname) ||
      hostname.endsWith(".localhost") ||
      hostname === this.publicHost ||
      LOCAL_NAMES.has(hostname) ||
      // IPv4-mapped loopback, as the URL parser writes it: ::ffff:7f00:1 for ::ffff:127.0.0.1.
      /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(hostname) ||
      // This machine's own name (a server bound to 127.0.1.1 is reached by it on Debian).
      hostname === os.hostname().toLowerCase()
    );
  }
}

/** Lower-case host name of a URL (IPv6 without brackets), or undefined when it does not parse. */
function hostnameOf(url: string): string | undefined {
  try {
    const name = new URL(url).hostname.toLowerCase();
    return name.startsWith("[") && name.endsWith("]") ? name.slice(1, -1) : name;
  } catch {
    return undefined;
  }
}
