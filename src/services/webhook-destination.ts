import dns from "node:dns/promises";
import net from "node:net";
import { DomainError } from "./errors.js";

/**
 * SSRF guard for webhook destinations. A webhook URL chosen by a user must not reach the
 * server's own loopback, the private network or cloud metadata (link-local) addresses, unless
 * the operator allowlisted the host. Every address a name resolves to is checked, and the
 * caller connects to the checked address (so a DNS answer that changes between check and
 * connect cannot redirect the request).
 */

const BLOCKED_V4: [string, number][] = [
  ["0.0.0.0", 8], // "this network"
  ["10.0.0.0", 8],
  ["100.64.0.0", 10], // carrier-grade NAT
  ["127.0.0.0", 8],
  ["169.254.0.0", 16], // link-local, cloud metadata
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, broadcast
];

function v4ToInt(ip: string): number {
  return ip.split(".").reduce((acc, part) => (acc << 8) + Number(part), 0) >>> 0;
}

/** True for addresses a webhook must not reach unless allowlisted. */
export function isBlockedAddress(address: string): boolean {
  if (net.isIPv4(address)) {
    const n = v4ToInt(address);
    return BLOCKED_V4.some(([base, bits]) => (n >>> (32 - bits)) === (v4ToInt(base) >>> (32 - bits)));
  }
  if (net.isIPv6(address)) {
    const g = ipv6Groups(address);
    const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
    const v4At = (i: number) => `${g[i] >> 8}.${g[i] & 0xff}.${g[i + 1] >> 8}.${g[i + 1] & 0xff}`;
    if (zeros(0, 7) && (g[7] === 0 || g[7] === 1)) return true; // :: and ::1
    // Forms that carry an IPv4 address the kernel or a translator connects to: judge that address.
    // (Node's URL parser writes [::ffff:127.0.0.1] as ::ffff:7f00:1, so the text form is no guide.)
    if (zeros(0, 5) && g[5] === 0xffff) return isBlockedAddress(v4At(6)); // ::ffff:0:0/96 mapped
    if (zeros(0, 4) && g[4] === 0xffff && g[5] === 0) return isBlockedAddress(v4At(6)); // ::ffff:0:0:0/96 translated
    if (zeros(0, 6)) return isBlockedAddress(v4At(6)); // ::/96 IPv4-compatible
    if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return isBlockedAddress(v4At(6)); // 64:ff9b::/96 NAT64
    if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) return true; // 64:ff9b:1::/48 local-use NAT64
    if (g[0] === 0x2002) return isBlockedAddress(v4At(1)); // 2002::/16 6to4
    if ((g[0] & 0xfe00) === 0xfc00) return true; // fc00::/7 unique local
    if ((g[0] & 0xffc0) === 0xfe80) return true; // fe80::/10 link-local
    if ((g[0] & 0xffc0) === 0xfec0) return true; // fec0::/10 site-local (deprecated, still routed by some)
    if ((g[0] & 0xff00) === 0xff00) return true; // multicast
    if (g[0] === 0x100 && zeros(1, 4)) return true; // 100::/64 discard-only
    return false;
  }
  return true;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a dotted IPv4 tail converted). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase().replace(/%.*$/, ""); // a zone id names an interface, not an address
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number);
    text = text.slice(0, dotted.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((h) => parseInt(h, 16)));
  const front = parse(head);
  if (tail === undefined) return front;
  const back = parse(tail);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}

export interface CheckedDestination {
  url: URL;
  /** The vetted address to connect to. */
  address: string;
  family: 4 | 6;
}

/**
 * Parses and vets a webhook URL. Throws BAD_USER_INPUT naming `field` for a malformed URL, a
 * scheme other than http/https, embedded credentials, or a destination in a refused range.
 */
export async function checkWebhookDestination(rawUrl: string, allowlist: readonly string[], field = "url"): Promise<CheckedDestination> {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new DomainError("BAD_USER_INPUT", `${field}: not a valid URL`, field);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new DomainError("BAD_USER_INPUT", `${field}: must be an http or https URL`, field);
  if (url.username || url.password) throw new DomainError("BAD_USER_INPUT", `${field}: must not embed credentials; the signature authenticates deliveries`, field);
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  const allowed = allowlist.map((h) => h.toLowerCase()).includes(host);
  let addresses: { address: string; family: number }[];
  if (net.isIP(host)) addresses = [{ address: host, family: net.isIP(host) }];
  else {
    try {
      addresses = await dns.lookup(host, { all: true, verbatim: true });
    } catch (err) {
      throw new DomainError("BAD_USER_INPUT", `${field}: host ${JSON.stringify(host)} does not resolve (${(err as NodeJS.ErrnoException).code ?? "error"})`, field);
    }
  }
  if (addresses.length === 0) throw new DomainError("BAD_USER_INPUT", `${field}: host ${JSON.stringify(host)} does not resolve`, field);
  if (!allowed) {
    const blocked = addresses.find((a) => isBlockedAddress(a.address));
    if (blocked) {
      throw new DomainError(
        "BAD_USER_INPUT",
        `${field}: ${JSON.stringify(host)} resolves to ${blocked.address}, a loopback, private or link-local address; an operator can allow it with MLGRAPH_WEBHOOK_ALLOWLIST`,
        field,
      );
    }
  }
  return { url, address: addresses[0].address, family: addresses[0].family === 6 ? 6 : 4 };
}
