/**
 * Device check (run on a GPU machine, not in npm test): task processes that a `kill -9`ed executor
 * left running keep holding GPU memory until the next executor on the machine starts; its
 * TaskProcessRegistry.stopOrphans() must stop the whole task process tree so the GPU is free
 * again, and must leave alone the tasks of an executor that is still running. Uses the built dist/.
 *   node test/device/gpu-orphan-check.js
 *
 * The "executor" here is a child node process that starts one task the way the agent does
 * (LocalProcess in its own process group, recorded in the registry) and is then killed with -9.
 * The task is `sh` with two python processes under it, each holding 1 GiB of GPU memory through
 * the CUDA driver API (ctypes, no framework), so a stop that reached only the group leader would
 * leave memory in use.
 */
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { spawn, execFileSync } = require("node:child_process");
const { detectGpus } = require("../../dist/src/executors/gpu-detection.js");
const { LocalProcess } = require("../../dist/src/executors/runtimes/local-process.js");
const { TaskProcessRegistry } = require("../../dist/src/executors/task-process-registry.js");

const TASK_RUN_ID = "device-orphan-check";
const HOLD_MIB = 1024;
const log = { warn: (o, m) => console.log("registry warn:", m, JSON.stringify(o)), info() {}, error: console.error };

/** Holds HOLD_MIB of GPU memory, announces itself with a file named by its pid, then sleeps (no output: its pipes die with the executor). */
const HOLDER = [
  "import ctypes, os, sys, time",
  "c = ctypes.CDLL('libcuda.so.1')",
  "assert c.cuInit(0) == 0, 'cuInit'",
  "dev = ctypes.c_int(0); ctx = ctypes.c_void_p(); ptr = ctypes.c_uint64()",
  "assert c.cuDeviceGet(ctypes.byref(dev), 0) == 0, 'cuDeviceGet'",
  "assert c.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0, 'cuCtxCreate'",
  `assert c.cuMemAlloc_v2(ctypes.byref(ptr), ${HOLD_MIB} << 20) == 0, 'cuMemAlloc'`,
  "assert c.cuMemsetD8_v2(ptr, 1, " + `${HOLD_MIB} << 20` + ") == 0, 'cuMemset'",
  "open(os.path.join(sys.argv[1], 'ready-%d' % os.getpid()), 'w').close()",
  "time.sleep(600)",
].join("\n");

function gpuMemoryUsedMib(index) {
  const out = execFileSync("nvidia-smi", ["--query-gpu=index,memory.used", "--format=csv,noheader,nounits"], { encoding: "utf8" });
  for (const line of out.trim().split("\n")) {
    const [i, used] = line.split(",").map((s) => s.trim());
    if (Number(i) === index) return Number(used);
  }
  throw new Error(`nvidia-smi lists no GPU ${index}`);
}

function computeApps() {
  try {
    return execFileSync("nvidia-smi", ["--query-compute-apps=pid,used_memory", "--format=csv,noheader"], { encoding: "utf8" }).trim().replace(/\n/g, "; ") || "(none)";
  } catch (err) {
    return `(query failed: ${err.message})`;
  }
}

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, ms, test) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await test()) return;
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** The stand-in executor: starts the task like the agent does, records its group, never returns. */
async function executorChild(workdirBase, gpuIndex, readyDir) {
  const registry = new TaskProcessRegistry(workdirBase);
  const holder = `python3 -c "$HOLDER" "$READY_DIR"`;
  const proc = new LocalProcess({
    argv: ["sh", "-c", `${holder} & ${holder} & wait`],
    env: { ...process.env, CUDA_VISIBLE_DEVICES: String(gpuIndex), MLGRAPH_TASK_RUN_ID: TASK_RUN_ID, HOLDER, READY_DIR: readyDir },
    cwd: workdirBase,
    timeoutMs: 600_000,
    graceMs: 1000,
    onLines: (stream, lines) => lines.forEach((l) => console.log(`task ${stream}: ${l}`)),
  });
  registry.record(proc.pid, TASK_RUN_ID, log);
  console.log(`RECORDED ${proc.pid}`);
  await proc.done;
}

async function main() {
  const gpus = await detectGpus("auto");
  console.log("detectGpus('auto'):", JSON.stringify(gpus));
  if (gpus.length === 0) throw new Error("no GPU detected");
  const gpu = gpus[0].index;
  const workdirBase = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-orphan-"));
  const readyDir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-ready-"));
  const before = gpuMemoryUsedMib(gpu);
  console.log(`GPU ${gpu} memory used before: ${before} MiB`);

  const executor = spawn(process.execPath, [__filename, "--executor", workdirBase, String(gpu), readyDir], { stdio: ["ignore", "pipe", "inherit"] });
  let pgid = null;
  executor.stdout.setEncoding("utf8");
  executor.stdout.on("data", (chunk) => {
    process.stdout.write(`executor: ${chunk}`);
    const m = /RECORDED (\d+)/.exec(chunk);
    if (m) pgid = Number(m[1]);
  });
  await waitFor("both GPU holders", 60_000, () => pgid !== null && fs.readdirSync(readyDir).length === 2);
  const holders = fs.readdirSync(readyDir).map((f) => Number(f.replace("ready-", "")));
  const held = gpuMemoryUsedMib(gpu);
  console.log(`task group ${pgid}, holders ${holders.join(", ")}; GPU ${gpu} memory used: ${held} MiB; compute apps: ${computeApps()}`);
  if (held - before < 2 * HOLD_MIB * 0.9) throw new Error(`the task holds only ${held - before} MiB`);

  // Safety: a successor must not touch the tasks of an executor that is still running.
  const whileAlive = await new TaskProcessRegistry(workdirBase).stopOrphans(1000, log);
  await sleep(500);
  const stillHeld = gpuMemoryUsedMib(gpu);
  console.log(`stopOrphans while the executor runs: ${whileAlive} stopped; memory used ${stillHeld} MiB`);
  if (whileAlive !== 0 || !holders.every(alive)) throw new Error("stopOrphans touched a live executor's task");

  executor.kill("SIGKILL");
  await new Promise((r) => executor.once("exit", r));
  await sleep(1000);
  const orphaned = gpuMemoryUsedMib(gpu);
  console.log(`executor killed with -9: holders alive ${holders.map(alive).join(", ")}; memory used ${orphaned} MiB (the orphans hold the GPU)`);
  if (!holders.every(alive) || orphaned - before < 2 * HOLD_MIB * 0.9) throw new Error("the orphans did not outlive their executor: nothing to check");

  const started = Date.now();
  const stopped = await new TaskProcessRegistry(workdirBase).stopOrphans(3000, log);
  await waitFor("the GPU memory to be released", 15_000, () => !holders.some(alive) && gpuMemoryUsedMib(gpu) - before < 256);
  const after = gpuMemoryUsedMib(gpu);
  console.log(`successor's stopOrphans: ${stopped} group(s) stopped; holders alive ${holders.map(alive).join(", ")}; memory used ${after} MiB after ${Date.now() - started} ms; compute apps: ${computeApps()}`);
  if (stopped !== 1) throw new Error(`expected 1 group stopped, got ${stopped}`);
  if (fs.readdirSync(path.join(workdirBase, "mlgraph-task-groups")).length !== 0) throw new Error("the stopped group's record was left behind");
  console.log("PASS: a killed executor's task tree is stopped by its successor and the GPU memory is free; a live executor's task is left alone");
}

if (process.argv[2] === "--executor") {
  executorChild(process.argv[3], Number(process.argv[4]), process.argv[5]).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error("FAIL:", err.message);
      process.exit(1);
    },
  );
}
