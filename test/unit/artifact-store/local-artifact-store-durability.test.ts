import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { Readable } from "node:stream";
import { foldersChangedBy, LocalArtifactStore } from "../../../src/stores/artifact-store/local-artifact-store.js";

// The module object itself (an `import * as` namespace has read-only bindings jest cannot spy on).
const fsPromises = jest.requireActual<typeof import("node:fs/promises")>("node:fs/promises");

describe("foldersChangedBy", () => {
  it("is the file's own folder when no folder was made", () => {
    expect(foldersChangedBy("/data/objects/a/b/model.bin", undefined)).toEqual(["/data/objects/a/b"]);
  });

  it("adds every folder mkdir made and the parent of the topmost", () => {
    expect(foldersChangedBy("/data/objects/a/b/c/model.bin", "/data/objects/a/b")).toEqual([
      "/data/objects/a/b/c",
      "/data/objects/a/b",
      "/data/objects/a",
    ]);
    expect(foldersChangedBy("/data/objects/a/model.bin", "/data/objects/a")).toEqual(["/data/objects/a", "/data/objects"]);
  });
});

describe("LocalArtifactStore durability", () => {
  let dir: string;
  let store: LocalArtifactStore;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "mlgraph-artifact-sync-"));
    store = new LocalArtifactStore({
      directory: LocalArtifactStore.defaultDirectory(dir),
      secret: randomBytes(32),
      publicBaseUrl: () => "http://127.0.0.1/artifacts",
    });
  });

  afterAll(async () => {
    jest.restoreAllMocks();
    await rm(dir, { recursive: true, force: true });
  });

  /** Which paths were opened and flushed with `sync()` while `work` ran. */
  async function flushedDuring(work: () => Promise<unknown>): Promise<string[]> {
    const flushed: string[] = [];
    const realOpen = fsPromises.open;
    const spy = jest.spyOn(fsPromises, "open").mockImplementation(async (...args: Parameters<typeof fsPromises.open>) => {
      const handle = await realOpen(...args);
      const realSync = handle.sync.bind(handle);
      handle.sync = async () => {
        await realSync();
        flushed.push(String(args[0]));
      };
      return handle;
    });
    try {
      await work();
    } finally {
      spy.mockRestore();
    }
    return flushed;
  }

  it("flushes the object, its folder and the folders it made before answering", async () => {
    const body = Buffer.from("weights");
    const flushed = await flushedDuring(() => store.writeObject("runs/r1/model/weights.bin", Readable.from([body]), body.length));
    const objects = path.join(LocalArtifactStore.defaultDirectory(dir), "objects");
    // The file's bytes (flushed under its temporary name), then the folders that name it.
    expect(flushed).toHaveLength(1 + 4);
    expect(flushed.slice(1)).toEqual([
      path.join(objects, "runs", "r1", "model"),
      path.join(objects, "runs", "r1"),
      path.join(objects, "runs"),
      objects,
    ]);
  });

  it("flushes only the file's own folder when it already existed", async () => {
    const body = Buffer.from("more");
    const flushed = await flushedDuring(() => store.writeObject("runs/r1/model/config.json", Readable.from([body]), body.length));
    expect(flushed.slice(1)).toEqual([path.join(LocalArtifactStore.defaultDirectory(dir), "objects", "runs", "r1", "model")]);
  });
});
