/**
 * Node flags the server is meant to run with. `npm start` passes them; V8 sizes its heap when the
 * process starts, so they cannot be set from inside it (v8.setFlagsFromString changed nothing).
 *
 * --max-semi-space-size=64: 64 MB semi-spaces (Node's default is 16 MB; the young generation is
 * about three semi-spaces, so up to ~190 MB of heap instead of ~50 MB). Each round of metric
 * ingest allocates a few MB of short-lived request bodies and INSERT text; with the default,
 * scavenges took 17 % of the server's main thread under columnar ingest, with 64 MB 7 % (32 MB:
 * 15 %, 128 MB: 7 %), worth 5-10 % more points per second.
 */
export const SERVER_NODE_FLAGS = ["--max-semi-space-size=64"];

/** A flag's name as V8 compares it: without its value, quotes, or the `_` spelling of `-`. */
function flagName(arg: string): string {
  return arg.replace(/^["']+|["']+$/g, "").split("=")[0].replace(/_/g, "-");
}

/**
 * The server flags this process was started without, on its command line or in NODE_OPTIONS (any
 * value of a flag counts: it is the user's choice).
 */
export function missingNodeFlags(execArgv: readonly string[], nodeOptions: string): string[] {
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].map(flagName));
  return SERVER_NODE_FLAGS.filter((flag) => !given.has(flagName(flag)));
}
