import { InProcessRateLimiter } from "../../../src/server/rate-limiter.js";

describe("InProcessRateLimiter", () => {
  afterEach(() => jest.restoreAllMocks());

  it("throttles per key and refills at its rate", async () => {
    let now = 1_000_000;
    jest.spyOn(Date, "now").mockImplementation(() => now);
    const limiter = new InProcessRateLimiter(2, 3);
    for (let i = 0; i < 3; i++) expect((await limiter.take("a")).allowed).toBe(true);
    expect(await limiter.take("a")).toEqual({ allowed: false, retryAfterSeconds: 1 });
    expect((await limiter.take("b")).allowed).toBe(true);
    now += 500; // one token back
    expect((await limiter.take("a")).allowed).toBe(true);
    expect((await limiter.take("a")).allowed).toBe(false);
  });

  it("keeps a throttled caller throttled when it tracks more than 100,000 keys", async () => {
    // A refill so slow that no bucket is full again during the test: nothing can be dropped for free.
    const limiter = new InProcessRateLimiter(0.001, 5);
    for (let i = 0; i < 5; i++) expect((await limiter.take("token:hammering")).allowed).toBe(true);
    expect((await limiter.take("token:hammering")).allowed).toBe(false);
    // Many other principals make a request each, while the throttled one keeps trying; before,
    // passing 100,000 keys cleared every bucket and gave it a full burst back.
    for (let i = 0; i < 100_050; i++) {
      await limiter.take(`token:other-${i}`);
      if (i % 1000 === 0) expect((await limiter.take("token:hammering")).allowed).toBe(false);
    }
    expect((await limiter.take("token:hammering")).allowed).toBe(false);
  });

  it("drops buckets that have refilled before ones still draining", async () => {
    let now = 1_000_000;
    jest.spyOn(Date, "now").mockImplementation(() => now);
    const limiter = new InProcessRateLimiter(1, 2, 11);
    // The oldest bucket is a throttled one; the ten after it take one token each and refill.
    expect((await limiter.take("throttled")).allowed).toBe(true);
    expect((await limiter.take("throttled")).allowed).toBe(true);
    expect((await limiter.take("throttled")).allowed).toBe(false);
    now += 100;
    for (let i = 0; i < 10; i++) await limiter.take(`idle-${i}`);
    now += 1000; // the idle buckets are full again; "throttled" has 1.1 of 2 tokens
    expect((await limiter.take("newcomer")).allowed).toBe(true); // 12 keys: over the bound of 11
    // Had "throttled" been dropped it would start again from a full burst of 2.
    expect((await limiter.take("throttled")).allowed).toBe(true);
    expect((await limiter.take("throttled")).allowed).toBe(false);
    // The key whose request caused the sweep kept its bucket (one token taken of two).
    expect((await limiter.take("newcomer")).allowed).toBe(true);
    expect((await limiter.take("newcomer")).allowed).toBe(false);
  });
});
