import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { downloadArtifact } from "../../../client/artifact-upload";
import { MlgraphError } from "../../../client/errors";
import type { MetricRequester } from "../../../client/metric-logger";

const BODY = crypto.randomBytes(64 * 1024);
const SHA256 = crypto.createHash("sha256").update(BODY).digest("hex");

/** A store that sends the file whole, or cuts the connection half way through the body. */
async function fileServer(cut: boolean): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-length": String(BODY.length) });
    if (!cut) return res.end(BODY);
    res.write(BODY.subarray(0, BODY.length / 2), () => setTimeout(() => res.socket?.destroy(), 20));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/model.bin`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The API part: one file `model/model.bin` in the run, served from downloadUrl. */
function api(downloadUrl: string): MetricRequester {
  return {
    async request() {
      return { run: { id: "run-1", artifacts: [{ path: "model/model.bin", name: "model.bin", size: BODY.length, sha256: SHA256, isDir: false, downloadUrl }] } } as never;
    },
  };
}

describe("downloadArtifact", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "mlgraph-download-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("writes a single file into an existing folder under its own name (EISDIR, and <folder>.partial left behind)", async () => {
    const store = await fileServer(false);
    try {
      const written = await downloadArtifact(api(store.url), "run-1", "model/model.bin", dir);
      expect(written).toEqual([path.join(dir, "model.bin")]);
      expect(fs.readFileSync(path.join(dir, "model.bin")).equals(BODY)).toBe(true);
      expect(fs.existsSync(`${dir}.partial`)).toBe(false);
      // A path that is not a folder is still the file's own name.
      const named = path.join(dir, "renamed.bin");
      expect(await downloadArtifact(api(store.url), "run-1", "model/model.bin", named)).toEqual([named]);
    } finally {
      await store.close();
    }
  });

  it("removes the .partial file when the connection drops mid-body, and says which file (the half file stayed)", async () => {
    const store = await fileServer(true);
    try {
      const target = path.join(dir, "model.bin");
      const failure = await downloadArtifact(api(store.url), "run-1", "model/model.bin", target).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(fs.readdirSync(dir)).toEqual([]);
      expect(failure).toBeInstanceOf(MlgraphError);
      expect(failure).toMatchObject({ code: "NETWORK_ERROR", message: expect.stringContaining("model/model.bin") });
    } finally {
      await store.close();
    }
  });
});
