import path from "node:path";
import type { Command } from "commander";
import { downloadArtifact, ListArtifactsDocument, uploadArtifact } from "../../client/index.js";
import { action, connect, formatBytes, notFound, printJson, printTable, progressBar, withConnection, type ConnectionFlags } from "./cli-support.js";

/** `mlgraph artifacts upload|download|list`. */
export function registerArtifactCommands(program: Command): void {
  const artifacts = program.command("artifacts").description("a run's files: upload, download, list");

  withConnection(
    artifacts
      .command("upload <run-id> <local-path>")
      .description("upload a file or folder to a run (SHA-256 verified, multipart for large files)")
      .option("--path <artifact-path>", "destination inside the run (default: the file's or folder's name)")
      .option("--progress", "show the progress bar even when stderr is not a terminal"),
  ).action(
    action(async (runId: string, localPath: string, flags: ConnectionFlags & { path?: string; progress?: boolean }) => {
      let bar: ReturnType<typeof progressBar> | undefined;
      const uploaded = await uploadArtifact(connect(flags), runId, localPath, {
        artifactPath: flags.path,
        onProgress: ({ doneBytes, totalBytes }) => {
          bar ??= progressBar(`upload ${path.basename(localPath)}`, totalBytes, flags.progress);
          bar.update(doneBytes);
        },
      });
      bar?.finish();
      if (flags.json) return printJson(uploaded);
      for (const a of uploaded) process.stdout.write(`uploaded ${a.path} (${formatBytes(a.size)}, sha256 ${a.sha256?.slice(0, 12)})\n`);
    }),
  );

  withConnection(
    artifacts
      .command("download <run-id> <artifact-path>")
      .description("download a run's file or folder (SHA-256 checked)")
      .option("-o, --out <local-path>", "where to write (default: the artifact's name in the current folder)")
      .option("--progress", "show the progress bar even when stderr is not a terminal"),
  ).action(
    action(async (runId: string, artifactPath: string, flags: ConnectionFlags & { out?: string; progress?: boolean }) => {
      let bar: ReturnType<typeof progressBar> | undefined;
      const written = await downloadArtifact(connect(flags), runId, artifactPath, flags.out ?? path.basename(artifactPath), {
        onProgress: ({ doneBytes, totalBytes }) => {
          bar ??= progressBar(`download ${path.basename(artifactPath)}`, totalBytes, flags.progress);
          bar.update(doneBytes);
        },
      });
      bar?.finish();
      if (flags.json) return printJson(written);
      for (const f of written) process.stdout.write(`wrote ${f}\n`);
    }),
  );

  withConnection(artifacts.command("list <run-id>").description("files and folders directly inside a path of a run").option("--path <artifact-path>", "folder inside the run")).action(
    action(async (runId: string, flags: ConnectionFlags & { path?: string }) => {
      const { run } = await connect(flags).request(ListArtifactsDocument, { runId, path: flags.path });
      if (!run) throw notFound(`run ${runId} not found`);
      if (flags.json) return printJson(run.artifacts);
      printTable(["PATH", "SIZE", "SHA256", "CREATED"], run.artifacts.map((a) => [a.isDir ? `${a.path}/` : a.path, a.size, a.sha256?.slice(0, 12), a.createdAt]));
    }),
  );
}
