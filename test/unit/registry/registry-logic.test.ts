import { filledModelCardSections, validateApprovalPolicy } from "../../../src/services/approval-policy";
import { checkWebhookDestination, isBlockedAddress } from "../../../src/services/webhook-destination";
import { signWebhookBody, verifyWebhookSignature } from "../../../src/services/webhook-signature";
import { parseModelFilter } from "../../../src/services/registered-model-filter";
import { DomainError } from "../../../src/services/errors";

describe("webhook SSRF ranges", () => {
  it.each([
    ["127.0.0.1", true], ["10.0.0.1", true], ["172.16.5.4", true], ["172.32.0.1", false], ["192.168.0.10", true], ["169.254.169.254", true],
    ["100.64.0.1", true], ["0.0.0.0", true], ["8.8.8.8", false], ["93.184.216.34", false], ["::1", true], ["::", true], ["fd12::1", true],
    ["fe80::1", true], ["::ffff:127.0.0.1", true], ["::ffff:8.8.8.8", false], ["2606:4700::1111", false], ["ff02::1", true],
    // IPv4 carried inside IPv6, in the hex form Node's URL parser writes ([::ffff:127.0.0.1] -> ::ffff:7f00:1)
    ["::ffff:7f00:1", true], ["::ffff:a9fe:a9fe", true], ["::ffff:a00:1", true], ["0:0:0:0:0:ffff:7f00:1", true], ["::ffff:808:808", false],
    ["::7f00:1", true], ["::127.0.0.1", true], ["64:ff9b::7f00:1", true], ["64:ff9b::808:808", false], ["64:ff9b:1::1", true],
    ["2002:7f00:1::1", true], ["2002:808:808::1", false], ["::ffff:0:7f00:1", true], ["fec0::1", true], ["fe80::1%eth0", true],
  ])("%s blocked=%s", (address, blocked) => {
    expect(isBlockedAddress(address as string)).toBe(blocked);
  });

  it.each(["http://[::ffff:127.0.0.1]/hook", "http://[::ffff:169.254.169.254]/latest", "http://[0:0:0:0:0:ffff:7f00:1]:8080/", "http://[64:ff9b::a00:1]/"])(
    "refuses %s as a webhook destination (the URL parser's hex form of an embedded IPv4 address)",
    async (url) => {
      await expect(checkWebhookDestination(url, [])).rejects.toThrow(/loopback, private or link-local/);
    },
  );
});

describe("webhook signatures", () => {
  it("verifies its own signature and refuses tampering and stale timestamps", () => {
    const now = Date.now();
    const t = Math.floor(now / 1000);
    const header = signWebhookBody("s3cret-s3cret-s3cret", '{"a":1}', t);
    expect(header).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    expect(verifyWebhookSignature("s3cret-s3cret-s3cret", '{"a":1}', header, 300, now)).toBe(true);
    expect(verifyWebhookSignature("s3cret-s3cret-s3cret", '{"a":2}', header, 300, now)).toBe(false);
    expect(verifyWebhookSignature("other-secret-other", '{"a":1}', header, 300, now)).toBe(false);
    expect(verifyWebhookSignature("s3cret-s3cret-s3cret", '{"a":1}', header, 300, now + 301_000)).toBe(false);
  });
});

describe("model card sections", () => {
  it("counts a heading only when text follows it before the next heading of the same level", () => {
    const card = "# Model\n\n## Intended use\nScoring.\n\n## Limitations\n\n## Fairness\n### Details\nGap 0.03\n";
    const filled = filledModelCardSections(card);
    expect(filled.has("intended use")).toBe(true);
    expect(filled.has("limitations")).toBe(false);
    expect(filled.has("fairness")).toBe(true);
    expect(filled.has("model")).toBe(true);
  });
});

describe("approval policy validation", () => {
  it("refuses thresholds that are not run filters, naming the item", () => {
    expect(() => validateApprovalPolicy({ metricThresholds: ["metrics.gap <= 0.05", "metrics.gap <<"] }, "policy")).toThrow(DomainError);
    try {
      validateApprovalPolicy({ metricThresholds: ["metrics.gap <= 0.05", "metrics.gap <<"] }, "policy");
    } catch (err) {
      expect((err as DomainError).field).toBe("policy.metricThresholds[1]");
    }
    expect(validateApprovalPolicy({ requiredModelCardSections: [" Fairness "] }, "policy")).toEqual({ requiredModelCardSections: ["Fairness"], metricThresholds: [], appliesToStages: ["PRODUCTION"] });
  });
});

describe("registered model filter", () => {
  it("compiles name and tag terms to parameters, never to SQL text", () => {
    expect(parseModelFilter("", "filter")).toEqual({ sql: "TRUE", params: [] });
    const f = parseModelFilter("name LIKE 'churn%' and tags.team = 'o''brien'", "filter");
    expect(f.params).toEqual(["churn%", "o'brien", "team"]);
    expect(f.sql).not.toContain("churn");
    expect(() => parseModelFilter("name = 'x'; DROP TABLE runs", "filter")).toThrow(/filter: expected AND/);
    expect(() => parseModelFilter("stage = 'x'", "filter")).toThrow(DomainError);
  });
});
