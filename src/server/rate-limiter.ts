import type { Redis } from "ioredis";
import type * as IoRedis from "ioredis";
import type { Logger } from "pino";

export interface RateDecision {
  allowed: boolean;
  retryAfterSeconds: number;
}

/** A token bucket per key (an authenticated principal): `ratePerSecond` refill, `burst` capacity. */
export interface RateLimiter {
  take(key: string): Promise<RateDecision>;
  close(): Promise<void>;
}

/** Single-process buckets; with several replicas use the Redis limiter so the limit is global. */
export class InProcessRateLimiter implements RateLimiter {
  /** In order of last use, least recent first (each take re-inserts its key). */
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly ratePerSecond: number, private readonly burst: number, private readonly maxBuckets = 100_000) {}

  async take(key: string): Promise<RateDecision> {
    const now = Date.now();
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
    bucket.at = now;
    this.buckets.delete(key);
    this.buckets.set(key, bucket);
    if (this.buckets.size > this.maxBuckets) this.evict(now, key);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true, retryAfterSeconds: 0 };
    }
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / this.ratePerSecond)) };
  }

  /**
   * Bounds memory without handing throttled callers a fresh burst (clearing every bucket did): a
   * bucket that has refilled is the same as no bucket, so those go first; if that is not enough,
   * the least recently used go, down to 90% of the bound so the sweep runs once per many new keys.
   */
  private evict(now: number, current: string): void {
    for (const [key, b] of this.buckets) {
      if (key !== current && b.tokens + ((now - b.at) / 1000) * this.ratePerSecond >= this.burst) this.buckets.delete(key);
    }
    const target = Math.floor(this.maxBuckets * 0.9);
    for (const key of this.buckets.keys()) {
      if (this.buckets.size <= target || key === current) break;
      this.buckets.delete(key);
    }
  }

  async close(): Promise<void> {
    this.buckets.clear();
  }
}

/** The bucket update runs atomically in Redis, using Redis' clock so replicas agree. */
const TAKE_SCRIPT = `
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1 allowed = 1 end
redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
`;

export class RedisRateLimiter implements RateLimiter {
  private readonly redis: Redis;
  /** Whether the last call failed: the outage is logged when it starts and when it ends, not per request. */
  private failing = false;

  constructor(url: string, private readonly prefix: string, private readonly ratePerSecond: number, private readonly burst: number, private readonly log: Logger) {
    // Required here, not imported: a server without REDIS_URL never loads ioredis.
    const { Redis } = require("ioredis") as typeof IoRedis;
    this.redis = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    // Connection errors surface through take(); the client's own error events would only repeat them.
    this.redis.on("error", () => undefined);
  }

  async take(key: string): Promise<RateDecision> {
    try {
      const [allowed, tokens] = (await this.redis.eval(TAKE_SCRIPT, 1, `${this.prefix}rate:${key}`, this.ratePerSecond, this.burst)) as [number, string];
      if (this.failing) {
        this.failing = false;
        this.log.info("rate limiting through Redis works again");
      }
      if (allowed === 1) return { allowed: true, retryAfterSeconds: 0 };
      return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - Number(tokens)) / this.ratePerSecond)) };
    } catch (err) {
      // Redis down: fail open rather than refuse every request.
      if (!this.failing) {
        this.failing = true;
        this.log.warn({ err: (err as Error).message }, "rate limiting is off while Redis is unavailable");
      }
      return { allowed: true, retryAfterSeconds: 0 };
    }
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
