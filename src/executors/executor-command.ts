import os from "node:os";
import type { Command } from "commander";
import { ConfigError, executorEnvironment } from "../config.js";
import { createLogger } from "../server/logger.js";

interface ExecutorFlags {
  server?: string;
  token?: string;
  pool: string;
  gpus: string;
  concurrency: string;
  name?: string;
  cpu?: string;
  memoryMb?: string;
  label?: string[];
  workdirBase?: string;
  pipelineDir?: string;
  waitSeconds: string;
  graceSeconds: string;
  logDrainSeconds: string;
  logLevel?: string;
  runtime: string;
  namespace?: string;
  serviceAccount?: string;
  kubeconfig?: string;
  jobPollSeconds: string;
  podErrorGraceSeconds: string;
  unschedulableGraceSeconds: string;
  gpuType?: string;
  gpuTypeLabel: string;
  nodeSelector?: string[];
  toleration?: string[];
  logEndSeconds: string;
}

/** `key=value` flags into a map; `flag` names the flag in the error. */
function keyValues(flag: string, items: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items ?? []) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--${flag}: expected key=value, got ${JSON.stringify(item)}`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/**
 * With Kubernetes the cluster places pods: nvidia-smi on the executor's machine says nothing, so
 * `auto` means none, a count caps the GPUs its Jobs request at once, and indices mean nothing.
 */
export function kubernetesGpuCount(spec: string): number {
  if (spec === "auto" || spec === "none") return 0;
  if (/^\d+$/.test(spec)) return Number(spec);
  throw new ConfigError(`--gpus: with --runtime kubernetes, expected none or a count N (GPUs its Jobs may request at once), got ${JSON.stringify(spec)}`);
}

/** What a Kubernetes executor registers without --cpu/--memory-mb: the server's largest CPU count, 1 PiB. */
const KUBERNETES_CPU = 100_000;
const KUBERNETES_MEMORY_MB = 1024 ** 3;

function positive(name: string, text: string | undefined, integer: boolean): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new ConfigError(`--${name}: expected a positive ${integer ? "integer" : "number"}, got ${JSON.stringify(text)}`);
  return n;
}

/** `mlgraph executor`: the pull agent (src/executors/agent.ts) as a CLI command. */
export function registerExecutorCommand(program: Command): void {
  program
    .command("executor")
    .description("run a pull executor: claim tasks of one pool from the server and run them as local processes or Kubernetes Jobs")
    .option("--server <url>", "server URL (MLGRAPH_URL)")
    .option("--token <token>", "executor token (MLGRAPH_TOKEN); scoped to its pool")
    .option("--pool <pool>", "pool to serve", "default")
    .option("--gpus <spec>", "auto (nvidia-smi), none, a count N, or indices like 0,1", "auto")
    .option("--concurrency <n>", "tasks run at once", "1")
    .option("--name <name>", "display name (default host-pid); with --runtime kubernetes, the name its Jobs are labelled with (default: hostname-pool): keep it stable across restarts and unique")
    .option("--cpu <cores>", "CPU cores offered (default: this machine's)")
    .option("--memory-mb <mb>", "memory offered in MiB (default: this machine's)")
    .option("--label <key=value...>", "labels (repeatable)")
    .option("--workdir-base <dir>", "parent of each task attempt's fresh working directory (default: OS temp dir)")
    .option("--pipeline-dir <dir>", "where relative script paths in task commands are found (MLGRAPH_PIPELINE_DIR, default: cwd)")
    .option("--wait-seconds <s>", "long-poll length of each claim", "20")
    .option("--grace-seconds <s>", "SIGTERM to SIGKILL grace when stopping a task", "10")
    .option("--log-drain-seconds <s>", "how long a finished task's outcome waits for its last log lines to get through", "30")
    .option("--log-level <level>", "log level (MLGRAPH_LOG_LEVEL, default info)")
    .option("--runtime <runtime>", "local (processes on this machine) or kubernetes (one Job per attempt)", "local")
    .option("--namespace <ns>", "kubernetes: namespace of the Jobs (required)")
    .option("--service-account <name>", "kubernetes: service account of the pods (default: none mounted)")
    .option("--kubeconfig <file>", "kubernetes: kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)")
    .option("--job-poll-seconds <s>", "kubernetes: between two reads of a Job and its pod", "2")
    .option("--pod-error-grace-seconds <s>", "kubernetes: an image pull or config error fails the attempt after this long", "60")
    .option("--unschedulable-grace-seconds <s>", "kubernetes: a pod no node can take fails the attempt after this long", "600")
    .option("--gpu-type <name>", "kubernetes: the GPU model its --gpus slots register as, e.g. NVIDIA-H100-80GB-HBM3: tasks whose gpu_type is that are claimed (default: unknown, so none are)")
    .option("--gpu-type-label <key>", "kubernetes: the node label a task's gpu_type selects its nodes by (none: no selector)", "nvidia.com/gpu.product")
    .option("--node-selector <key=value...>", "kubernetes: node labels every pod must land on (repeatable)")
    .option("--toleration <taint...>", "kubernetes: taints every pod tolerates, written key[=value][:effect] as kubectl writes taints (repeatable); GPU pods tolerate nvidia.com/gpu anyway")
    .option("--log-end-seconds <s>", "kubernetes: how long a finished Job's log stream may stay open before it is aborted", "10")
    .action(async (flags: ExecutorFlags) => {
      const env = executorEnvironment();
      const server = flags.server ?? env.server;
      if (!server) throw new ConfigError("--server or MLGRAPH_URL: the server to claim from is required");
      const labels = keyValues("label", flags.label);
      const log = createLogger((flags.logLevel ?? env.logLevel) as Parameters<typeof createLogger>[0]);
      const { ExecutorAgent } = await import("./agent.js");
      if (flags.runtime !== "local" && flags.runtime !== "kubernetes") throw new ConfigError(`--runtime: expected local or kubernetes, got ${JSON.stringify(flags.runtime)}`);
      const kubernetes = flags.runtime === "kubernetes";
      let runtime;
      if (kubernetes) {
        if (!flags.namespace) throw new ConfigError("--namespace: required with --runtime kubernetes");
        const { KubernetesAttemptRuntime } = await import("./runtimes/kubernetes-attempts.js");
        const { parseToleration } = await import("./runtimes/kubernetes-job.js");
        const gpus = kubernetesGpuCount(flags.gpus);
        if (flags.gpuType !== undefined && (gpus === 0 || !/^[A-Za-z0-9_.-]{1,63}$/.test(flags.gpuType))) {
          throw new ConfigError(`--gpu-type: a GPU product (letters, digits, _ . -; as tasks' gpu_type and the node label have it) for the slots of --gpus N, got ${JSON.stringify(flags.gpuType)}${gpus === 0 ? " without --gpus N" : ""}`);
        }
        const tolerations = (flags.toleration ?? []).map((t) => {
          try {
            return parseToleration(t);
          } catch (err) {
            throw new ConfigError(`--toleration: ${(err as Error).message}`);
          }
        });
        runtime = new KubernetesAttemptRuntime({
          namespace: flags.namespace,
          serviceAccount: flags.serviceAccount,
          kubeconfig: flags.kubeconfig,
          gpus,
          ...(flags.gpuType !== undefined && { gpuType: flags.gpuType }),
          gpuTypeLabel: flags.gpuTypeLabel === "none" ? null : flags.gpuTypeLabel,
          nodeSelector: keyValues("node-selector", flags.nodeSelector),
          tolerations,
          pollMs: positive("job-poll-seconds", flags.jobPollSeconds, false)! * 1000,
          podErrorGraceMs: positive("pod-error-grace-seconds", flags.podErrorGraceSeconds, false)! * 1000,
          unschedulableGraceMs: positive("unschedulable-grace-seconds", flags.unschedulableGraceSeconds, false)! * 1000,
          logEndWaitMs: positive("log-end-seconds", flags.logEndSeconds, false)! * 1000,
          // Must name the same executor after a restart (its left Jobs are deleted at start): a
          // StatefulSet pod's hostname, or --name. A pid would change with every restart; the pool keeps
          // two executors of one machine apart.
          executorName: flags.name ?? `${os.hostname()}-${flags.pool}`,
          log,
        });
      }
      const agent = new ExecutorAgent({
        server,
        token: flags.token ?? env.token,
        pool: flags.pool,
        gpus: flags.gpus,
        concurrency: positive("concurrency", flags.concurrency, true)!,
        name: flags.name,
        // With Kubernetes the cluster decides what fits; the executor bounds only Jobs in flight
        // (--concurrency), unless --cpu/--memory-mb set a budget.
        cpu: positive("cpu", flags.cpu, false) ?? (kubernetes ? KUBERNETES_CPU : undefined),
        memoryMb: positive("memory-mb", flags.memoryMb, true) ?? (kubernetes ? KUBERNETES_MEMORY_MB : undefined),
        labels,
        workdirBase: flags.workdirBase,
        pipelineDir: flags.pipelineDir ?? env.pipelineDir,
        taskBaseEnv: env.taskBaseEnv,
        waitSeconds: positive("wait-seconds", flags.waitSeconds, true),
        graceSeconds: positive("grace-seconds", flags.graceSeconds, false),
        logDrainSeconds: positive("log-drain-seconds", flags.logDrainSeconds, false),
        runtime,
        log,
      });
      await agent.start();
      // Machine-readable line for scripts and tests.
      process.stdout.write(`mlgraph executor ${agent.id} serving pool ${flags.pool}\n`);
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) {
          // Without this, only kill -9 ended a draining executor, and its tasks ran on without it.
          log.warn({ signal }, "stopping the running tasks (SIGTERM, SIGKILL after the grace) and reporting them as failed");
          agent.stopTasks();
          return;
        }
        stopping = true;
        log.info({ signal }, "stopping: no more claims, draining running tasks (send the signal again to stop them)");
        await agent.stop();
        log.info("drained");
        process.exit(0);
      };
      process.on("SIGTERM", () => void stop("SIGTERM"));
      process.on("SIGINT", () => void stop("SIGINT"));
      await agent.finished();
    });
}
