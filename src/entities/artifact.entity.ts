import { Entity, PrimaryColumn, PrimaryGeneratedColumn, Column, CreateDateColumn, type ValueTransformer } from "typeorm";

/** bigint columns come back from pg as strings; sizes stay below 2^53 (S3's limit is 5 TiB). */
export const bigintNumber: ValueTransformer = {
  to: (value: number | null | undefined) => value,
  from: (value: string | null) => (value === null ? null : Number(value)),
};

/** An upload handed out by createArtifactUpload and not yet completed. */
@Entity({ name: "artifact_uploads" })
export class ArtifactUploadRecord {
  @PrimaryGeneratedColumn("uuid")
  id: string;

  @Column({ name: "run_id", type: "uuid" })
  runId: string;

  @Column({ type: "text" })
  path: string;

  @Column({ type: "text" })
  key: string;

  @Column({ type: "bigint", transformer: bigintNumber })
  size: number;

  @Column({ type: "text" })
  sha256: string;

  @Column({ name: "content_type", type: "text", nullable: true })
  contentType: string | null;

  /** The store's multipart upload id; null for single PUT uploads. */
  @Column({ name: "store_upload_id", type: "text", nullable: true })
  storeUploadId: string | null;

  @Column({ name: "created_by", type: "text" })
  createdBy: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;

  @Column({ name: "expires_at", type: "timestamptz" })
  expiresAt: Date;
}

/** A verified artifact file of a run (size and SHA-256 checked on completion). */
@Entity({ name: "artifacts" })
export class ArtifactRecord {
  @PrimaryColumn({ name: "run_id", type: "uuid" })
  runId: string;

  @PrimaryColumn({ type: "text" })
  path: string;

  @Column({ type: "text" })
  key: string;

  @Column({ type: "bigint", transformer: bigintNumber })
  size: number;

  @Column({ type: "text" })
  sha256: string;

  @Column({ name: "content_type", type: "text", nullable: true })
  contentType: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;
}
