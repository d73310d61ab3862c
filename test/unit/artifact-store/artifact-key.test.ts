import { DomainError } from "../../../src/services/errors.js";
import {
  artifactDirPrefix,
  artifactKey,
  uploadObjectKey,
  artifactPathFromKey,
  validateArtifactDirPath,
  validateArtifactKey,
  validateArtifactPath,
} from "../../../src/stores/artifact-store/artifact-key.js";

function badInputOf(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DomainError);
    return err as DomainError;
  }
  throw new Error("expected a DomainError");
}

describe("upload object keys", () => {
  const upload = "0b9f7c1e-2d4a-4c6b-9e8f-1a2b3c4d5e6f";
  it("gives every upload its own object, named after the file, whatever the path's length", () => {
    expect(uploadObjectKey("run-1", upload, "model/weights.bin")).toBe(`runs/run-1/objects/${upload}/weights.bin`);
    const deep = Array.from({ length: 8 }, () => "d".repeat(100)).join("/") + "/f.bin"; // a path near the 900-byte limit
    expect(Buffer.byteLength(uploadObjectKey("run-1", upload, deep))).toBeLessThan(1024);
  });
  it("validates the path like artifactKey, naming the field", () => {
    expect(badInputOf(() => uploadObjectKey("r1", upload, "../x", "input.path")).field).toBe("input.path");
    expect(() => uploadObjectKey("r1", "../../etc", "x")).toThrow(/not a UUID/);
  });
});

describe("artifact keys", () => {
  it("builds run-scoped keys and maps them back", () => {
    expect(artifactKey("run-1", "model/weights.bin")).toBe("runs/run-1/artifacts/model/weights.bin");
    expect(artifactPathFromKey("run-1", "runs/run-1/artifacts/model/weights.bin")).toBe("model/weights.bin");
    expect(artifactDirPrefix("run-1")).toBe("runs/run-1/artifacts/");
    expect(artifactDirPrefix("run-1", "model/")).toBe("runs/run-1/artifacts/model/");
    expect(() => artifactPathFromKey("run-1", "runs/run-2/artifacts/x")).toThrow();
  });

  it.each([
    ["plain file", "model.pkl"],
    ["nested", "a/b/c.txt"],
    ["dots inside names", "v1.2/..hidden/.env/x..y"],
    ["unicode", "résumé/数据.csv"],
    ["spaces and symbols", "my file (1) #2 & more?.txt"],
    // Never URL-decoded, so this is a folder literally named "%2e%2e", not a parent reference.
    ["percent-encoded dots stay literal", "%2e%2e/x"],
  ])("accepts %s", (_label, path) => {
    expect(validateArtifactPath(path, "input.path")).toBe(path);
  });

  it.each([
    ["parent segment", "../x"],
    ["parent in the middle", "a/../../b"],
    ["trailing parent", "a/.."],
    ["current segment", "./a"],
    ["absolute path", "/etc/passwd"],
    ["backslash traversal", "..\\x"],
    ["backslash separator", "a\\b"],
    ["NUL byte", "a\u0000b"],
    ["newline", "a\nb"],
    ["DEL", "a\u007fb"],
    ["C1 control", "a\u0085b"],
    ["empty segment", "a//b"],
    ["trailing slash", "a/"],
    ["empty", ""],
    ["lone surrogate", "a\ud800b"],
    ["over-long path", "x".repeat(901)],
    ["over-long segment", `a/${"y".repeat(256)}`],
  ])("refuses %s", (_label, path) => {
    const err = badInputOf(() => validateArtifactPath(path, "input.path"));
    expect(err.code).toBe("BAD_USER_INPUT");
    expect(err.field).toBe("input.path");
    expect(err.message.startsWith("input.path: ")).toBe(true);
  });

  it("refuses non-strings", () => {
    expect(badInputOf(() => validateArtifactPath(42, "p")).field).toBe("p");
  });

  it("counts the length limit in UTF-8 bytes", () => {
    const seg = (n: number) => "é".repeat(n); // 2 bytes each
    expect(validateArtifactPath([seg(112), seg(112), seg(112), seg(112)].join("/"), "p")).toBeTruthy(); // 899 bytes
    expect(() => validateArtifactPath([seg(113), seg(113), seg(113), seg(113)].join("/"), "p")).toThrow(/907 bytes/);
  });

  it("folder paths accept the root and one trailing slash", () => {
    expect(validateArtifactDirPath("", "p")).toBe("");
    expect(validateArtifactDirPath("a/b/", "p")).toBe("a/b");
    expect(() => validateArtifactDirPath("/", "p")).toThrow(DomainError);
    expect(() => validateArtifactDirPath("a//", "p")).toThrow(DomainError);
    expect(() => validateArtifactDirPath("../", "p")).toThrow(DomainError);
  });

  it("validates run ids used as key segments", () => {
    expect(() => artifactKey("../r", "x")).toThrow(DomainError);
    expect(() => artifactKey("", "x")).toThrow(DomainError);
    expect(badInputOf(() => artifactKey("r1", "../x", "input.path")).field).toBe("input.path");
  });

  it("validates whole keys with the same rules", () => {
    expect(validateArtifactKey("runs/r/artifacts/a")).toBe("runs/r/artifacts/a");
    expect(() => validateArtifactKey("runs/r/../../etc")).toThrow(DomainError);
    expect(() => validateArtifactKey("/runs")).toThrow(DomainError);
  });
});
