import type { Run } from "../entities/run.entity.js";
import type { RequestContext } from "./context.js";
import { liveStream } from "./live-stream.js";
import { RUN_EVENTS_TOPIC, type RunUpdatedEvent } from "./runs.service.js";
import { validateId } from "./validation.js";

/** The `runUpdated` stream: each change is re-read from the database, so subscribers see committed state. */
export class RunUpdatesService {
  subscribe(ctx: RequestContext, args: { experimentId?: string | null; runId?: string | null }): AsyncIterable<Run> {
    // Compared as PostgreSQL spells ids (lower case): an id sent in upper case matched no event.
    const experimentId = args.experimentId ? validateId(args.experimentId, "experimentId") : undefined;
    const runId = args.runId ? validateId(args.runId, "runId") : undefined;
    return liveStream<RunUpdatedEvent, Run>(ctx, RUN_EVENTS_TOPIC, {
      filter: (e) => (!experimentId || e.experimentId === experimentId) && (!runId || e.runId === runId),
      map: (e) => ctx.services.runs.get(ctx, e.runId),
    });
  }
}
