import type { NonEmptyArray } from "type-graphql";
import { ExperimentResolver } from "./experiment.resolver.js";
import { RunResolver } from "./run.resolver.js";
import { TokenResolver } from "./token.resolver.js";

/** Every resolver class; features append theirs here. */
// eslint-disable-next-line @typescript-eslint/no-unsafe-function-type
export const resolvers: NonEmptyArray<Function> = [TokenResolver, ExperimentResolver, RunResolver];
