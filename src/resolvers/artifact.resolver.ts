import { Arg, Authorized, Ctx, FieldResolver, ID, Int, Mutation, Resolver, Root } from "type-graphql";
import { Run } from "../entities/run.entity.js";
import type { RequestContext } from "../services/context.js";
import { Artifact, ArtifactUpload, ArtifactUploadInput, ArtifactUploadKind, UploadedPartInput } from "./types/registry.types.js";

@Resolver(() => Artifact)
export class ArtifactResolver {
  @Authorized(["editor", "task"])
  @Mutation(() => ArtifactUpload, {
    description: "Starts an artifact upload: presigned PUT URL(s), multipart for large files. The artifact appears only after completeArtifactUpload.",
  })
  async createArtifactUpload(
    @Ctx() ctx: RequestContext,
    @Arg("input", () => ArtifactUploadInput, { description: "The file to upload." }) input: ArtifactUploadInput,
  ): Promise<ArtifactUpload> {
    const { id, descriptor } = await ctx.services.artifacts.createUpload(ctx, input);
    return {
      id,
      kind: descriptor.kind === "multipart" ? ArtifactUploadKind.MULTIPART : ArtifactUploadKind.SINGLE,
      url: descriptor.kind === "single" ? descriptor.url : null,
      parts: descriptor.kind === "multipart" ? descriptor.parts : null,
      partSize: descriptor.kind === "multipart" ? descriptor.partSize : null,
      expiresAt: descriptor.expiresAt,
      headers: Object.entries(descriptor.headers).map(([name, value]) => ({ name, value })),
    };
  }

  @Authorized(["editor", "task"])
  @Mutation(() => Artifact, { description: "Finishes an upload: assembles parts, verifies size and SHA-256 and records the artifact. A mismatch discards the bytes." })
  completeArtifactUpload(
    @Ctx() ctx: RequestContext,
    @Arg("uploadId", () => ID, { description: "ArtifactUpload.id." }) uploadId: string,
    @Arg("parts", () => [UploadedPartInput], { nullable: true, description: "Multipart only: each part's ETag (checked when given)." }) parts?: UploadedPartInput[] | null,
  ) {
    return ctx.services.artifacts.completeUpload(ctx, uploadId, parts);
  }

  @FieldResolver(() => String, { nullable: true, description: "A URL that downloads the file (HTTP Range supported) until it expires; null for folders." })
  downloadUrl(
    @Root() artifact: Artifact,
    @Ctx() ctx: RequestContext,
    @Arg("expiresInSeconds", () => Int, { defaultValue: 3600, description: "Lifetime of the URL, at most 7 days." }) expiresInSeconds: number,
  ) {
    return ctx.services.artifacts.downloadUrl(ctx, artifact, expiresInSeconds);
  }
}

@Resolver(() => Run)
export class RunArtifactsResolver {
  @FieldResolver(() => [Artifact], { description: "Files and folders directly inside `path` of the run's verified artifacts." })
  artifacts(
    @Root() run: Run,
    @Ctx() ctx: RequestContext,
    @Arg("path", () => String, { nullable: true, description: "Folder inside the run's artifacts; the root when omitted." }) path?: string | null,
  ) {
    return ctx.services.artifacts.list(ctx, run.id, path);
  }
}
