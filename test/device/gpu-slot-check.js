/**
 * Device check (run on a GPU machine, not in npm test): the executor's GPU detection reads
 * nvidia-smi, GPU slots are handed out so no two tasks share one, and a task process sees exactly
 * the GPUs it was given (CUDA_VISIBLE_DEVICES), a CPU task none. Uses the built dist/.
 *   node test/device/gpu-slot-check.js
 */
const { detectGpus, allocateGpus } = require("../../dist/src/executors/gpu-detection.js");
const { LocalProcess } = require("../../dist/src/executors/runtimes/local-process.js");

const PROBE = [
  "python3",
  "-c",
  [
    "import ctypes, os",
    "c = ctypes.CDLL('libcuda.so.1')",
    "rc = c.cuInit(0)",
    "n = ctypes.c_int(0)",
    "rc2 = c.cuDeviceGetCount(ctypes.byref(n)) if rc == 0 else rc",
    "print('CUDA_VISIBLE_DEVICES=%r cuInit=%d devices=%d' % (os.environ.get('CUDA_VISIBLE_DEVICES'), rc, n.value if rc == 0 else 0))",
  ].join("\n"),
];

async function run(label, visible) {
  const seen = [];
  const p = new LocalProcess({
    argv: PROBE,
    env: { ...process.env, CUDA_VISIBLE_DEVICES: visible },
    cwd: "/tmp",
    timeoutMs: 60_000,
    graceMs: 1000,
    onLines: (_stream, lines) => lines.forEach((l) => seen.push(l)),
  });
  const result = await p.done;
  console.log(`${label}: exit ${result.exitCode} ${seen.join(" | ")}`);
  const m = /devices=(\d+)/.exec(seen.join("\n"));
  return m ? Number(m[1]) : -1;
}

(async () => {
  const gpus = await detectGpus("auto");
  console.log("detectGpus('auto'):", JSON.stringify(gpus));
  if (gpus.length === 0) throw new Error("no GPU detected");
  const free = gpus.map((g) => g.index);
  const slotA = allocateGpus(free, 1);
  const slotB = allocateGpus(free.filter((i) => !slotA.includes(i)), 1);
  console.log(`task A gets GPU ${JSON.stringify(slotA)}; task B (needs 1) gets ${JSON.stringify(slotB)} (null: it waits for A)`);
  if (slotB && slotB.some((i) => slotA.includes(i))) throw new Error("two tasks share a GPU");
  const gpuSees = await run("GPU task", slotA.join(","));
  const cpuSees = await run("CPU task", "");
  const ok = gpuSees === slotA.length && cpuSees === 0;
  console.log(ok ? "PASS: slot isolation holds" : `FAIL: GPU task saw ${gpuSees}, CPU task saw ${cpuSees}`);
  process.exit(ok ? 0 : 1);
})().catch((err) => {
  console.error("FAIL:", err.message);
  process.exit(1);
});
