import { execFile } from "node:child_process";
import { DomainError } from "../services/errors.js";

/** One GPU an executor may hand to tasks. */
export interface GpuInfo {
  /** Device index as CUDA / nvidia-smi number it (what CUDA_VISIBLE_DEVICES takes). */
  index: number;
  /** e.g. "NVIDIA H100 80GB HBM3"; "unknown" when only a count was configured. */
  model: string;
  /** Total memory in MiB, or null when not reported. */
  memoryMb: number | null;
}

/** Runs a program and resolves with its stdout; rejects when it is missing, fails or times out. */
export type CommandRunner = (file: string, args: readonly string[], timeoutMs: number) => Promise<string>;

/** What the executor is told to use: `--gpus auto|none|N|0,1`. */
export type GpuSpec = "auto" | "none" | number | number[] | string;

export const NVIDIA_SMI_ARGS = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"] as const;

const NVIDIA_SMI_TIMEOUT_MS = 5_000;

const defaultRunner: CommandRunner = (file, args, timeoutMs) =>
  new Promise((resolve, reject) => {
    execFile(file, [...args], { timeout: timeoutMs, maxBuffer: 1024 * 1024, windowsHide: true }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(error, { stderr }));
      else resolve(stdout);
    });
  });

/**
 * Parses `nvidia-smi --query-gpu=index,name,memory.total --format=csv[,noheader][,nounits]`.
 * With a header the columns are found by name (so extra or reordered columns are fine); without
 * one they are taken as index, name, memory.total. Lines that are not GPU rows (e.g. "No devices
 * were found") are skipped. Result sorted by index.
 */
export function parseNvidiaSmiCsv(text: string): GpuInfo[] {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  if (lines.length === 0) return [];
  let columns = { index: 0, name: 1, memory: 2, count: 3 };
  const header = lines[0]!.split(",").map((c) => c.trim().toLowerCase());
  if (header.includes("index")) {
    columns = {
      index: header.indexOf("index"),
      name: header.indexOf("name"),
      memory: header.findIndex((c) => c.startsWith("memory.total")),
      count: header.length,
    };
    lines.shift();
  }
  const gpus: GpuInfo[] = [];
  for (const line of lines) {
    let cells = line.split(",").map((c) => c.trim());
    if (cells.length < columns.count) continue;
    // nvidia-smi does not quote; a comma inside a product name would add cells, all belonging to it.
    if (cells.length > columns.count && columns.name >= 0) {
      const extra = cells.length - columns.count;
      cells = [...cells.slice(0, columns.name), cells.slice(columns.name, columns.name + extra + 1).join(", "), ...cells.slice(columns.name + extra + 1)];
    }
    const indexText = cells[columns.index] ?? "";
    if (!/^\d+$/.test(indexText)) continue;
    gpus.push({
      index: Number(indexText),
      model: columns.name >= 0 && cells[columns.name] ? cells[columns.name]! : "unknown",
      memoryMb: columns.memory >= 0 ? parseMemoryMb(cells[columns.memory] ?? "") : null,
    });
  }
  return gpus.sort((a, b) => a.index - b.index);
}

function parseMemoryMb(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(MiB|GiB|KiB)?$/i.exec(text);
  if (!m) return null; // "[N/A]", "[Not Supported]"
  const value = Number(m[1]);
  switch ((m[2] ?? "MiB").toLowerCase()) {
    case "gib":
      return Math.round(value * 1024);
    case "kib":
      return Math.round(value / 1024);
    default:
      return Math.round(value);
  }
}

/** Told why nvidia-smi gave no answer although it is installed (a driver fault, a hang). */
export type GpuDetectionWarning = (problem: string) => void;

/**
 * Queries nvidia-smi; [] when it is absent, fails, times out or prints nothing usable. Absent is
 * the normal case on CPU machines; an installed nvidia-smi that fails (driver/library mismatch, a
 * GPU fallen off the bus, a hang) is reported through `warn`: silently offering no GPUs left a GPU
 * machine's pool idle with nothing in its log to say why.
 */
export async function queryNvidiaSmi(runner: CommandRunner = defaultRunner, warn?: GpuDetectionWarning): Promise<GpuInfo[]> {
  try {
    return parseNvidiaSmiCsv(await runner("nvidia-smi", NVIDIA_SMI_ARGS, NVIDIA_SMI_TIMEOUT_MS));
  } catch (err) {
    const failure = err as { code?: unknown; killed?: boolean; stderr?: unknown; message?: string };
    if (failure.code !== "ENOENT") {
      const why = failure.killed ? `no answer within ${NVIDIA_SMI_TIMEOUT_MS / 1000} s` : String(failure.stderr || failure.message || err).trim().slice(0, 500);
      warn?.(`nvidia-smi is installed but failed, so no GPUs are offered: ${why}`);
    }
    return [];
  }
}

/**
 * The GPUs this executor offers:
 * - "auto": whatever nvidia-smi reports ([] without it);
 * - "none" or 0: none;
 * - N (number, or a string of digits): indices 0..N-1, trusted even when nvidia-smi is missing
 *   (models filled in from nvidia-smi when it knows them, else "unknown");
 * - number[] or "0,1" / "device=0,1": exactly those indices.
 * Throws BAD_USER_INPUT (field "gpus") for anything else.
 */
export async function detectGpus(spec: GpuSpec, runner: CommandRunner = defaultRunner, warn?: GpuDetectionWarning): Promise<GpuInfo[]> {
  const indices = selectedIndices(spec);
  if (indices === "none") return [];
  const found = await queryNvidiaSmi(runner, indices === "auto" ? warn : undefined);
  if (indices === "auto") return found;
  const byIndex = new Map(found.map((g) => [g.index, g]));
  return indices.map((index) => byIndex.get(index) ?? { index, model: "unknown", memoryMb: null });
}

function selectedIndices(spec: GpuSpec): "auto" | "none" | number[] {
  const bad = (why: string) => new DomainError("BAD_USER_INPUT", `gpus: ${why} (expected auto, none, a count or indices like 0,1)`, "gpus");
  if (spec === "auto" || spec === "none") return spec;
  if (typeof spec === "number") {
    if (!Number.isInteger(spec) || spec < 0 || spec > 64) throw bad(`invalid GPU count ${spec}`);
    return spec === 0 ? "none" : Array.from({ length: spec }, (_, i) => i);
  }
  let list: number[];
  if (typeof spec === "string") {
    const text = spec.trim().replace(/^device=/, "");
    if (/^\d+$/.test(text) && !spec.trim().startsWith("device=")) return selectedIndices(Number(text));
    const parts = text.split(",").map((p) => p.trim()).filter((p) => p.length > 0);
    if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) throw bad(`invalid GPU selection ${JSON.stringify(spec)}`);
    list = parts.map(Number);
  } else if (Array.isArray(spec)) {
    list = spec;
  } else {
    throw bad("invalid GPU selection");
  }
  if (list.some((i) => !Number.isInteger(i) || i < 0 || i > 1023)) throw bad(`invalid GPU index in ${JSON.stringify(spec)}`);
  if (new Set(list).size !== list.length) throw bad(`repeated GPU index in ${JSON.stringify(spec)}`);
  return list.length === 0 ? "none" : [...list].sort((a, b) => a - b);
}

/**
 * Picks `count` GPUs from the free ones: the lowest-numbered contiguous run when there is one
 * (neighbouring indices usually share an NVLink/PCIe switch), else the lowest indices.
 * Returns null when not enough are free; [] for count 0. Pure.
 */
export function allocateGpus(freeIndices: readonly number[], count: number): number[] | null {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a non-negative integer, got ${count}`);
  if (count === 0) return [];
  const free = [...new Set(freeIndices)].sort((a, b) => a - b);
  if (free.length < count) return null;
  for (let start = 0; start + count <= free.length; start++) {
    if (free[start + count - 1]! - free[start]! === count - 1) return free.slice(start, start + count);
  }
  return free.slice(0, count);
}
