import { Experiment } from "./experiment.entity.js";
import { ExperimentTag } from "./experiment-tag.entity.js";
import { Run } from "./run.entity.js";
import { RunParam } from "./run-param.entity.js";
import { RunTag } from "./run-tag.entity.js";
import { Dataset } from "./dataset.entity.js";
import { RunInputRecord } from "./run-input.entity.js";
import { ApiToken } from "./api-token.entity.js";

/** Every typeorm entity; features append theirs here. */
export const entities = [Experiment, ExperimentTag, Run, RunParam, RunTag, Dataset, RunInputRecord, ApiToken];
