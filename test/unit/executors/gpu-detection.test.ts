import fc from "fast-check";
import { DomainError } from "../../../src/services/errors.js";
import { allocateGpus, detectGpus, parseNvidiaSmiCsv, type CommandRunner } from "../../../src/executors/gpu-detection.js";

// An 8x H100 SXM node, built from the single-GPU capture below (same line format).
const H100_WITH_HEADER = `index, name, memory.total [MiB]
0, NVIDIA H100 80GB HBM3, 81559 MiB
1, NVIDIA H100 80GB HBM3, 81559 MiB
2, NVIDIA H100 80GB HBM3, 81559 MiB
3, NVIDIA H100 80GB HBM3, 81559 MiB
4, NVIDIA H100 80GB HBM3, 81559 MiB
5, NVIDIA H100 80GB HBM3, 81559 MiB
6, NVIDIA H100 80GB HBM3, 81559 MiB
7, NVIDIA H100 80GB HBM3, 81559 MiB
`;
// `--format=csv,noheader,nounits` (what detectGpus asks for).
const NOHEADER_NOUNITS = "0, NVIDIA H100 80GB HBM3, 81559\r\n1, NVIDIA A100-SXM4-40GB, 40960\r\n";

const runnerReturning = (stdout: string): CommandRunner => async () => stdout;
const failingRunner: CommandRunner = async () => {
  throw Object.assign(new Error("spawn nvidia-smi ENOENT"), { code: "ENOENT" });
};

// Captured verbatim on an H100 80GB machine (nvidia-smi, --query-gpu=index,name,memory.total).
const CAPTURED_H100: Record<string, string> = {
  csv: "index, name, memory.total [MiB]\n0, NVIDIA H100 80GB HBM3, 81559 MiB\n",
  "csv,nounits": "index, name, memory.total [MiB]\n0, NVIDIA H100 80GB HBM3, 81559\n",
  "csv,noheader": "0, NVIDIA H100 80GB HBM3, 81559 MiB\n",
  "csv,noheader,nounits": "0, NVIDIA H100 80GB HBM3, 81559\n",
  // With an extra column (--query-gpu=index,name,memory.total,uuid --format=csv).
  "csv+uuid": "index, name, memory.total [MiB], uuid\n0, NVIDIA H100 80GB HBM3, 81559 MiB, GPU-c641a097-46a0-3833-4a01-760c2f9a1c9d\n",
};

describe("parseNvidiaSmiCsv", () => {
  it.each(Object.keys(CAPTURED_H100))("parses real H100 output, format %s", (format) => {
    expect(parseNvidiaSmiCsv(CAPTURED_H100[format]!)).toEqual([{ index: 0, model: "NVIDIA H100 80GB HBM3", memoryMb: 81559 }]);
  });

  it("parses the header format with units", () => {
    const gpus = parseNvidiaSmiCsv(H100_WITH_HEADER);
    expect(gpus).toHaveLength(8);
    expect(gpus[0]).toEqual({ index: 0, model: "NVIDIA H100 80GB HBM3", memoryMb: 81559 });
    expect(gpus.map((g) => g.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it("parses noheader,nounits with CRLF", () => {
    expect(parseNvidiaSmiCsv(NOHEADER_NOUNITS)).toEqual([
      { index: 0, model: "NVIDIA H100 80GB HBM3", memoryMb: 81559 },
      { index: 1, model: "NVIDIA A100-SXM4-40GB", memoryMb: 40960 },
    ]);
  });

  it("finds columns by header name and tolerates N/A memory", () => {
    expect(parseNvidiaSmiCsv("name, memory.total [MiB], index\nTesla T4, [N/A], 3\n")).toEqual([{ index: 3, model: "Tesla T4", memoryMb: null }]);
  });

  it("keeps a comma inside a product name", () => {
    expect(parseNvidiaSmiCsv("0, Some GPU, Rev 2, 1024 MiB\n")).toEqual([{ index: 0, model: "Some GPU, Rev 2", memoryMb: 1024 }]);
  });

  it("returns [] for error output and empty text", () => {
    expect(parseNvidiaSmiCsv("")).toEqual([]);
    expect(parseNvidiaSmiCsv("No devices were found\n")).toEqual([]);
    expect(parseNvidiaSmiCsv("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")).toEqual([]);
  });
});

describe("detectGpus", () => {
  it("auto uses nvidia-smi and asks for the noheader,nounits format", async () => {
    const calls: string[][] = [];
    const runner: CommandRunner = async (file, args) => {
      calls.push([file, ...args]);
      return NOHEADER_NOUNITS;
    };
    expect(await detectGpus("auto", runner)).toHaveLength(2);
    expect(calls).toEqual([["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]]);
  });

  it("auto gives [] when nvidia-smi is absent", async () => {
    expect(await detectGpus("auto", failingRunner)).toEqual([]);
  });

  it("says why when an installed nvidia-smi fails, and stays quiet when it is absent", async () => {
    const warnings: string[] = [];
    const driverMismatch: CommandRunner = async () => {
      throw Object.assign(new Error("Command failed: nvidia-smi"), { code: 18, stderr: "Failed to initialize NVML: Driver/library version mismatch\n" });
    };
    const hung: CommandRunner = async () => {
      throw Object.assign(new Error("Command failed: nvidia-smi"), { code: null, killed: true, signal: "SIGTERM" });
    };
    const absent: CommandRunner = async () => {
      throw Object.assign(new Error("spawn nvidia-smi ENOENT"), { code: "ENOENT" });
    };
    expect(await detectGpus("auto", driverMismatch, (w) => warnings.push(w))).toEqual([]);
    expect(await detectGpus("auto", hung, (w) => warnings.push(w))).toEqual([]);
    expect(await detectGpus("auto", absent, (w) => warnings.push(w))).toEqual([]);
    expect(warnings).toEqual([
      "nvidia-smi is installed but failed, so no GPUs are offered: Failed to initialize NVML: Driver/library version mismatch",
      "nvidia-smi is installed but failed, so no GPUs are offered: no answer within 5 s",
    ]);
  });

  it("auto gives [] on a machine without nvidia-smi (real execFile)", async () => {
    // Holds on CPU-only CI; on a GPU machine it must at least return well-formed entries.
    const gpus = await detectGpus("auto");
    for (const g of gpus) expect(Number.isInteger(g.index)).toBe(true);
  });

  it("none and 0 give []", async () => {
    expect(await detectGpus("none", runnerReturning(NOHEADER_NOUNITS))).toEqual([]);
    expect(await detectGpus(0, runnerReturning(NOHEADER_NOUNITS))).toEqual([]);
  });

  it("N means 0..N-1, with models from nvidia-smi when it knows them", async () => {
    expect(await detectGpus(3, runnerReturning(NOHEADER_NOUNITS))).toEqual([
      { index: 0, model: "NVIDIA H100 80GB HBM3", memoryMb: 81559 },
      { index: 1, model: "NVIDIA A100-SXM4-40GB", memoryMb: 40960 },
      { index: 2, model: "unknown", memoryMb: null },
    ]);
    expect(await detectGpus("2", failingRunner)).toEqual([
      { index: 0, model: "unknown", memoryMb: null },
      { index: 1, model: "unknown", memoryMb: null },
    ]);
  });

  it('"0,1"-style selections pick those indices', async () => {
    const h100 = runnerReturning(H100_WITH_HEADER);
    expect((await detectGpus("6,2", h100)).map((g) => g.index)).toEqual([2, 6]);
    expect((await detectGpus("device=3", h100)).map((g) => g.index)).toEqual([3]);
    expect((await detectGpus([1, 0], h100)).map((g) => g.model)).toEqual(["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"]);
  });

  it.each([["0,0"], ["a,b"], [-1], [1.5], [[0, -2]], ["0,,x"]])("refuses %p", async (spec) => {
    await expect(detectGpus(spec as never, failingRunner)).rejects.toBeInstanceOf(DomainError);
  });
});

describe("allocateGpus", () => {
  it("prefers the lowest contiguous run, else the lowest indices", () => {
    expect(allocateGpus([0, 2, 3, 5], 2)).toEqual([2, 3]);
    expect(allocateGpus([0, 2, 4, 6], 2)).toEqual([0, 2]);
    expect(allocateGpus([7, 1, 0], 1)).toEqual([0]);
    expect(allocateGpus([0, 1], 0)).toEqual([]);
    expect(allocateGpus([0, 1], 3)).toBeNull();
    expect(() => allocateGpus([0], -1)).toThrow(RangeError);
  });

  it("property: returns count distinct free indices, or null when too few are free", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 15 })), fc.integer({ min: 0, max: 16 }), (free, count) => {
        const got = allocateGpus(free, count);
        if (count > free.length) {
          expect(got).toBeNull();
          return;
        }
        expect(got).not.toBeNull();
        expect(got!).toHaveLength(count);
        expect(new Set(got!).size).toBe(count);
        for (const i of got!) expect(free).toContain(i);
      }),
    );
  });
});
