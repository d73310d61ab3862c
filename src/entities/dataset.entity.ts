import { Entity, PrimaryGeneratedColumn, Column, Unique, CreateDateColumn } from "typeorm";
import { Field, ID, ObjectType } from "type-graphql";

@Entity({ name: "datasets" })
@Unique(["name", "digest"])
@ObjectType({ description: "A dataset identified by name and content digest; runs record it as an input." })
export class Dataset {
  @PrimaryGeneratedColumn("uuid")
  @Field(() => ID)
  id: string;

  @Column({ type: "text" })
  @Field({ description: "Dataset name." })
  name: string;

  @Column({ type: "text" })
  @Field({ description: "Content digest (e.g. a hash) that pins the exact data." })
  digest: string;

  @Column({ name: "source_uri", type: "text", nullable: true })
  @Field(() => String, { nullable: true, description: "Where the data came from, e.g. s3://bucket/path." })
  sourceUri: string | null;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;
}
