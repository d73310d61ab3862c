import pino from "pino";
import { loadConfig } from "../../../src/config.js";
import { openArtifactStorage } from "../../../src/services/artifact-storage.js";
import { artifactKey } from "../../../src/stores/artifact-store/index.js";

/** Configuration reaches the S3 store: presigning needs no S3 server, so none runs here. */
describe("openArtifactStorage on S3", () => {
  const request = { key: artifactKey("r1", "model.bin"), size: 10, sha256: "ab".repeat(32) };
  const headersWith = async (env: Record<string, string>) => {
    const storage = await openArtifactStorage(loadConfig({}, { S3_BUCKET: "b", S3_ENDPOINT: "http://127.0.0.1:9", S3_ACCESS_KEY_ID: "k", S3_SECRET_ACCESS_KEY: "s", ...env }), pino({ level: "silent" }));
    try {
      return (await storage.store.createUpload(request)).headers;
    } finally {
      await storage.close();
    }
  };

  it("signs the declared SHA-256 by default, and not with S3_CHECKSUM_AT_PUT=false", async () => {
    expect(await headersWith({})).toEqual({ "x-amz-checksum-sha256": Buffer.from("ab".repeat(32), "hex").toString("base64") });
    expect(await headersWith({ S3_CHECKSUM_AT_PUT: "false" })).toEqual({});
  });
});
