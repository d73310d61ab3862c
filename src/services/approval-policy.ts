import type { ApprovalPolicy } from "../entities/registered-model.entity.js";
import { ModelStage, type ModelVersion } from "../entities/model-version.entity.js";
import type { ApprovalCheckResult } from "../entities/stage-transition-request.entity.js";
import type { RequestContext } from "./context.js";
import { DomainError } from "./errors.js";
import { parseFilter } from "./run-filter/index.js";
import { LIMITS, validateText } from "./validation.js";

const MAX_POLICY_ITEMS = 50;

/** Validates a policy given by a user; errors name `field.<part>[i]`. Thresholds must parse as run filters. */
export function validateApprovalPolicy(policy: ApprovalPolicy, field: string): ApprovalPolicy {
  const sections = (policy.requiredModelCardSections ?? []).map((s, i) => validateText(s, `${field}.requiredModelCardSections[${i}]`, 200).trim());
  const thresholds = (policy.metricThresholds ?? []).map((t, i) => {
    const f = `${field}.metricThresholds[${i}]`;
    validateText(t, f, LIMITS.keyLength * 4);
    try {
      parseFilter(t);
    } catch (err) {
      throw new DomainError("BAD_USER_INPUT", `${f}: ${(err as Error).message}`, f);
    }
    return t.trim();
  });
  if (sections.length > MAX_POLICY_ITEMS || thresholds.length > MAX_POLICY_ITEMS) {
    throw new DomainError("BAD_USER_INPUT", `${field}: at most ${MAX_POLICY_ITEMS} sections and ${MAX_POLICY_ITEMS} thresholds`, field);
  }
  const stages = policy.appliesToStages ?? [ModelStage.PRODUCTION];
  stages.forEach((s, i) => {
    if (!Object.values(ModelStage).includes(s as ModelStage)) throw new DomainError("BAD_USER_INPUT", `${field}.appliesToStages[${i}]: not a stage`, `${field}.appliesToStages[${i}]`);
  });
  return { requiredModelCardSections: sections, metricThresholds: thresholds, appliesToStages: [...new Set(stages)] };
}

/**
 * Section headings of a Markdown model card that have some text below them (before the next
 * heading of the same or a higher level), lower-cased.
 */
export function filledModelCardSections(card: string): Set<string> {
  const lines = card.split(/\r?\n/);
  const filled = new Set<string>();
  for (let i = 0; i < lines.length; i++) {
    const heading = /^(#{1,6})\s+(.+?)\s*#*\s*$/.exec(lines[i]);
    if (!heading) continue;
    const level = heading[1].length;
    for (let j = i + 1; j < lines.length; j++) {
      const next = /^(#{1,6})\s/.exec(lines[j]);
      if (next && next[1].length <= level) break;
      if (!next && lines[j].trim() !== "") {
        filled.add(heading[2].trim().toLowerCase());
        break;
      }
    }
  }
  return filled;
}

/**
 * Runs a model's approval policy for moving `version` to `toStage` and returns every check's
 * result (an empty list when the policy does not apply to that stage). Metric thresholds are run
 * filters evaluated on the source run through run search, so they use the metric store exactly
 * as `runs(filter:)` does; a threshold that cannot be evaluated fails with the reason.
 */
export async function runApprovalChecks(
  ctx: RequestContext,
  policy: ApprovalPolicy,
  version: ModelVersion,
  toStage: ModelStage,
): Promise<ApprovalCheckResult[]> {
  const stages = policy.appliesToStages ?? [ModelStage.PRODUCTION];
  if (!stages.includes(toStage)) return [];
  const results: ApprovalCheckResult[] = [];
  const sections = policy.requiredModelCardSections ?? [];
  const card = version.modelCard ?? "";
  results.push({
    name: "model card present",
    passed: card.trim() !== "",
    detail: card.trim() !== "" ? `${card.length} characters` : "the version has no model card",
  });
  const filled = filledModelCardSections(card);
  for (const section of sections) {
    const ok = filled.has(section.toLowerCase());
    results.push({ name: `model card section "${section}"`, passed: ok, detail: ok ? "present" : `no "${section}" heading with text below it` });
  }
  for (const threshold of policy.metricThresholds ?? []) {
    const name = `threshold ${threshold}`;
    try {
      // Restricted to the source run, so the metric store is asked about that run only.
      const page = await ctx.services.runs.searchRuns(ctx, { runIds: [version.runId], filter: threshold, first: 1 });
      const ok = page.items.length === 1;
      results.push({ name, passed: ok, detail: ok ? `source run ${version.runId} satisfies it` : `source run ${version.runId} does not satisfy it` });
    } catch (err) {
      if (!(err instanceof DomainError)) throw err;
      results.push({ name, passed: false, detail: `could not be evaluated: ${err.message}` });
    }
  }
  return results;
}
