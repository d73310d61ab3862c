/** Artifact storage: key rules, the store contract, and the S3 and local-disk implementations. */
export * from "./artifact-key.js";
export * from "./artifact-store.js";
export * from "./artifact-url-signature.js";
export * from "./local-artifact-router.js";
export * from "./local-artifact-store.js";
export * from "./s3-artifact-store.js";
