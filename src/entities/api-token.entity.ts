import { Entity, PrimaryGeneratedColumn, Column, CreateDateColumn } from "typeorm";
import { Field, ID, ObjectType } from "type-graphql";

@Entity({ name: "api_tokens" })
@ObjectType({ description: "An API token's metadata; the secret itself is shown only once, at creation." })
export class ApiToken {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ type: "text" })
  @Field({ description: "What the token is for." })
  name: string;

  @Column({ type: "text" })
  @Field({ description: "viewer, editor, admin, executor or task." })
  role: string;

  /** SHA-256 of the secret; the secret is never stored. */
  @Column({ name: "token_hash", type: "text", unique: true })
  tokenHash: string;

  @Column({ type: "text" })
  @Field({ description: "First characters of the secret, to recognise it." })
  prefix: string;

  /** Narrows executor and task tokens: e.g. {"pool":"gpu"} or {"taskRunId":"…","runId":"…"}. */
  @Column({ type: "jsonb", default: () => "'{}'::jsonb" })
  scope: Record<string, string>;

  @Column({ name: "created_by", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Who created it." })
  createdBy: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  @Field()
  createdAt: Date;

  @Column({ name: "expires_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true })
  expiresAt: Date | null;

  @Column({ name: "revoked_at", type: "timestamptz", nullable: true })
  @Field(() => Date, { nullable: true })
  revokedAt: Date | null;
}
