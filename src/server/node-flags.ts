/**
 * Node flags the server is meant to run with. `npm start` passes them; V8 sizes its heap when the
 * process starts, so they cannot be set from inside it (v8.setFlagsFromString changed nothing).
 *
 * --max-semi-space-size=64: a 64 MB young generation. Each round of metric ingest allocates a few
 * MB of short-lived request bodies and INSERT text; with Node's default 16 MB, scavenges took 17 %
 * of the server's main thread under columnar ingest, with 64 MB 7 % (32 MB: 15 %, 128 MB: 7 %).
 */
export const SERVER_NODE_FLAGS = ["--max-semi-space-size=64"];

/** The server flags this process was started without, on its command line or in NODE_OPTIONS (any value of a flag counts). */
export function missingNodeFlags(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ""): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].map((arg) => arg.split("=")[0]);
  return SERVER_NODE_FLAGS.filter((flag) => !given.includes(flag.split("=")[0]));
}
