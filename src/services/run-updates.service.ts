import type { Run } from "../entities/run.entity.js";
import type { RequestContext } from "./context.js";
import { liveStream } from "./live-stream.js";
import { RUN_EVENTS_TOPIC, type RunUpdatedEvent } from "./runs.service.js";
import { validateId } from "./validation.js";

/** The `runUpdated` stream: each change is re-read from the database, so subscribers see committed state. */
export class RunUpdatesService {
  subscribe(ctx: RequestContext, args: { experimentId?: string | null; runId?: string | null }): AsyncIterable<Run> {
    if (args.experimentId) validateId(args.experimentId, "experimentId");
    if (args.runId) validateId(args.runId, "runId");
    return liveStream<RunUpdatedEvent, Run>(ctx, RUN_EVENTS_TOPIC, {
      filter: (e) => (!args.experimentId || e.experimentId === args.experimentId) && (!args.runId || e.runId === args.runId),
      map: (e) => ctx.services.runs.get(ctx, e.runId),
    });
  }
}
